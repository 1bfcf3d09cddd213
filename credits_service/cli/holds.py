"""`flask holds sweep`."""

import click
from flask import current_app
from flask.cli import AppGroup

from .. import services

holds_cli = AppGroup("holds", help="Maintain the platform's holds.")


@holds_cli.command("sweep")
def sweep_holds() -> None:
    """Mark holds past their expiresAt as expired in storage, in batches (they stopped counting then)."""
    swept = services.holds().sweep(current_app.config["HOLD_SWEEP_BATCH"])
    click.echo(f"Marked {swept} lapsed hold(s) expired.")
