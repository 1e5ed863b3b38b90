"""For `gunicorn --config config/gunicorn.conf.py wsgi:app`: the same settings as `gunicorn wsgi:app`
(config/gunicorn_settings.py)."""

from config.gunicorn_settings import *  # noqa: F403
