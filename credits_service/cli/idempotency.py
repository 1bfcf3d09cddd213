"""`flask idempotency purge`."""

import click
from flask import current_app
from flask.cli import AppGroup

from .. import services

idempotency_cli = AppGroup("idempotency", help="Maintain stored Idempotency-Key answers.")


@idempotency_cli.command("purge")
def purge_idempotency_keys() -> None:
    """Delete stored Idempotency-Key answers older than IDEMPOTENCY_TTL_HOURS, in batches."""
    purged = services.idempotency_keys().purge(current_app.config["IDEMPOTENCY_PURGE_BATCH"])
    click.echo(f"Deleted {purged} expired idempotency key(s).")
