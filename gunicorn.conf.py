"""gunicorn reads this file by itself when started in the project folder: `gunicorn wsgi:app`
runs with the project's settings (config/gunicorn_settings.py), as the Procfile does."""

from config.gunicorn_settings import *  # noqa: F403
