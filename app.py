"""Entry point for `flask --app app` and gunicorn (`app:app`)."""

import sys

from credits_service import create_app
from credits_service.audit_keys import ConfigurationError

try:
    app = create_app()
except ConfigurationError as error:
    print(f"credits-service cannot start: {error}", file=sys.stderr)
    # 3 is gunicorn's "worker failed to boot": its master then stops instead of forking again.
    sys.exit(3)
