"""`flask keys|audit|idempotency|holds|webhooks|db ...`: commands built from services/, never from the HTTP layer."""

from flask import Flask


def init_app(app: Flask) -> None:
    from .audit import audit_cli
    from .db import MigrationsGroup
    from .holds import holds_cli
    from .idempotency import idempotency_cli
    from .keys import keys_cli
    from .webhooks import webhooks_cli

    for group in (keys_cli, audit_cli, idempotency_cli, holds_cli, webhooks_cli, MigrationsGroup(app)):
        app.cli.add_command(group)
