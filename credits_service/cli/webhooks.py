"""`flask webhooks deliver|purge`: the delivery worker and its upkeep."""

import signal
import threading
from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup

from .. import services

webhooks_cli = AppGroup("webhooks", help="Deliver webhook events, and purge the delivered ones.")
# Between rounds with nothing due, the worker waits this long for new deliveries.
POLL_SECONDS = 1.0


@webhooks_cli.command("deliver")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def deliver(once: bool) -> None:
    """Send due webhook deliveries until SIGTERM (which lets the attempt in flight finish).

    Several workers may run at once on PostgreSQL: each delivery goes to one of them."""
    stopping = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: stopping.set())
    attempted = 0
    while not stopping.is_set():
        done = services.deliverer().deliver_due(stop=stopping.is_set)
        attempted += done
        if once and not done:
            break
        if not done:
            stopping.wait(POLL_SECONDS)
    click.echo(f"Attempted {attempted} webhook delivery(ies).")


@webhooks_cli.command("purge")
def purge() -> None:
    """Delete deliveries that ended longer than WEBHOOK_RETENTION_HOURS ago, and their events."""
    purged = services.webhooks().purge(timedelta(hours=current_app.config["WEBHOOK_RETENTION_HOURS"]))
    click.echo(f"Deleted {purged} ended webhook delivery(ies).")
