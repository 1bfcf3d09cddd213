"""Entry point for `flask --app app` and gunicorn (`app:app`)."""

from credits_service import create_app
from credits_service.config import validate_environment

app = create_app(validate_environment())
