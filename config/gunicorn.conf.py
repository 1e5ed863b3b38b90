"""gunicorn settings, from the environment as on a Heroku-style PaaS (see Procfile)."""

import os
import sys

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


def on_starting(server):
    """Refuse to start, with the reason, when the configuration or a backend's credentials are
    wrong; warn about backends that are down (LOOKUP_STARTUP_CHECK: strict, warn or off)."""
    from config.settings import ConfigError, load_settings
    from lookup_service.startup import startup_check

    mode = os.environ.get("LOOKUP_STARTUP_CHECK", "strict").strip().lower()
    try:
        settings = load_settings()
        fatal, warnings = startup_check(settings) if mode != "off" else ([], [])
    except ConfigError as exc:
        print(f"lookup service: configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    for message in warnings:
        print(f"lookup service: warning: {message}", file=sys.stderr, flush=True)
    for message in fatal:
        print(f"lookup service: {'error' if mode == 'strict' else 'warning'}: {message}", file=sys.stderr, flush=True)
    if fatal and mode == "strict":
        sys.exit(1)


def post_worker_init(worker):
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", None) or {}
    service = extensions.get("lookup")
    if service is not None:
        service.start_background()
