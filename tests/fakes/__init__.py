"""Local fake servers of SaaS CRMs, answering their documented request and response shapes."""
