"""WSGI entry point: ``gunicorn wsgi:app`` (see Procfile) and ``flask --app wsgi ...``."""

from lookup_service import create_app

app = create_app()
