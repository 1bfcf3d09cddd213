"""Entry point for `flask --app app` and gunicorn (`app:app`)."""

import sys

from credits_service import create_app
from credits_service.audit_keys import ConfigurationError
from credits_service.config import EXIT_INVALID_CONFIGURATION, validate_environment

try:
    app = create_app(validate_environment())
except ConfigurationError as error:
    print(f"credits-service cannot start: {error}", file=sys.stderr)
    sys.exit(EXIT_INVALID_CONFIGURATION)
