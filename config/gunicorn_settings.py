"""gunicorn settings, from the environment as on a Heroku-style PaaS.

Read through ``gunicorn.conf.py`` in the project folder, which gunicorn loads by itself when it is
started there, so ``gunicorn wsgi:app`` (the Procfile) and ``gunicorn --config
config/gunicorn.conf.py wsgi:app`` run with the same worker, limits and log format. Only
gunicorn's own settings live here; the service starts its background work itself.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads let a worker keep answering while one request waits on a slow backend's deadline;
# the balanced variant of gunicorn's gthread worker shares keep-alive connections evenly.
worker_class = "config.balanced_worker.BalancedThreadWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
keepalive = 5
accesslog = "-" if os.environ.get("LOOKUP_ACCESS_LOG", "1") != "0" else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").strip().lower()  # the same level as the application's
# The path only (%(U)s), never the query string: it carries the phone number. The logger class
# masks digit runs in the path too, and headers (the token) are never logged.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
logger_class = "config.gunicorn_logging.MaskingLogger"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")
# gunicorn 27's control socket sits at one path per user ($HOME/.gunicorn/gunicorn.ctl): a second
# service on the host would take it over, and the service has no use for it.
control_socket_disable = True
