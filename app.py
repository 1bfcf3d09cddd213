"""Entry point for `flask --app app` and gunicorn (`app:app`)."""

from credits_service import create_app
from credits_service.config import exit_when_misconfigured

with exit_when_misconfigured():
    app = create_app()
