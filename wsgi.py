"""WSGI entry point for gunicorn: ``gunicorn -c deploy/gunicorn.conf.py wsgi:app``."""
