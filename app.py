"""Entry point for `flask --app app` and gunicorn (`app:app`)."""

from credits_service import create_app

app = create_app()
