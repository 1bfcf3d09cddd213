"""`flask keys ...`: create, bootstrap, list and revoke API keys."""

import sys

import click
from flask import current_app
from flask.cli import AppGroup

from .. import services
from ..errors import NotFound
from ..models import ROLES
from ..months import iso_utc
from ..services.api_keys import is_expired

keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")


def _shown(moment) -> str:
    return iso_utc(moment) if moment else "-"


@keys_cli.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="read, write (admin) or service.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None, help="Omit for no expiry.")
def create_key(name: str, role: str, expires_in_days: int | None) -> None:
    """Create a key for NAME and print it, alone, on stdout (it is stored only as a hash)."""
    click.echo(services.api_keys().create(name, role, expires_in_days))


@keys_cli.command("bootstrap")
@click.option("--name", default="admin", show_default=True)
def bootstrap_key(name: str) -> None:
    """On a database with no keys, create a write key and print `export CREDITS_KEY=<key>`."""
    keys = services.api_keys()
    if keys.exist():
        click.echo(
            "API keys already exist, so none was created. Make one with:\n"
            "  flask --app app keys create NAME --role write",
            err=True,
        )
        return
    click.echo(f"export CREDITS_KEY={keys.create(name, 'write')}")


@keys_cli.command("list")
def list_keys() -> None:
    """List keys (never the keys themselves)."""
    now = current_app.config["CLOCK"]()
    rows = [("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED")]
    for key in services.api_keys().list():
        expires = _shown(key.expires_at) + (" (expired)" if is_expired(key, now) else "")
        rows.append((str(key.id), key.name, key.role, _shown(key.created_at), expires, _shown(key.revoked_at)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@keys_cli.command("revoke")
@click.argument("id_or_name")
def revoke_key(id_or_name: str) -> None:
    """Revoke the key with this id, or every key with this name."""
    try:
        count = services.api_keys().revoke(id_or_name)
    except NotFound as missing:
        click.echo(missing.message, err=True)
        sys.exit(1)
    click.echo(f"Revoked {count} key(s) matching {id_or_name!r}.")
