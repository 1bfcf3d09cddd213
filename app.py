"""Entry point for `flask --app app` and gunicorn (`app:app`)."""

import sys

from credits_service import create_app
from credits_service.audit_keys import ConfigurationError

try:
    app = create_app()
except ConfigurationError as error:
    sys.exit(f"credits-service cannot start: {error}")
