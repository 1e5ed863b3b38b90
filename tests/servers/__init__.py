"""Helpers that start real servers (slapd, PostgreSQL, ...) on 127.0.0.1 for the tests."""
