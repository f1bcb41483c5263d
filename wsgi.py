"""WSGI entry point for gunicorn: ``gunicorn -c deploy/gunicorn.conf.py wsgi:app``."""

from connector.web import create_app

app = create_app()
