"""`flask keys ...`, `flask idempotency ...` and `flask audit ...`."""

import sys

import click
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError

from .api import idempotency_keys
from .errors import NotFound
from .extensions import db
from .models import ROLES
from .months import iso_utc
from .schemas import EXPORT_FORMATS, AuditExportQuerySchema
from .services.audit_export import export_chunks
from .services.audit_log import AuditFilter
from .services.keys import ApiKeys, is_expired

keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")
idempotency_cli = AppGroup("idempotency", help="Maintain stored Idempotency-Key answers.")
audit_cli = AppGroup("audit", help="Read and check the audit log.")

def _api_keys() -> ApiKeys:
    return ApiKeys(db.session(), current_app.config["CLOCK"])


def _shown(moment) -> str:
    return iso_utc(moment) if moment else "-"


@keys_cli.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="read, write (admin) or service.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None, help="Omit for no expiry.")
def create_key(name: str, role: str, expires_in_days: int | None) -> None:
    """Create a key for NAME and print it, alone, on stdout (it is stored only as a hash)."""
    click.echo(_api_keys().create(name, role, expires_in_days))


@keys_cli.command("bootstrap")
@click.option("--name", default="admin", show_default=True)
def bootstrap_key(name: str) -> None:
    """On a database with no keys, create a write key and print `export CREDITS_KEY=<key>`."""
    keys = _api_keys()
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
    for key in _api_keys().list():
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
        count = _api_keys().revoke(id_or_name)
    except NotFound as missing:
        click.echo(missing.message, err=True)
        sys.exit(1)
    click.echo(f"Revoked {count} key(s) matching {id_or_name!r}.")


@idempotency_cli.command("purge")
def purge_idempotency_keys() -> None:
    """Delete stored Idempotency-Key answers older than IDEMPOTENCY_TTL_HOURS."""
    click.echo(f"Deleted {idempotency_keys().purge()} expired idempotency key(s).")


@audit_cli.command("export")
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), default="csv", show_default=True)
@click.option("--client-id", help="Only this client's entries.")
@click.option("--admin-id", help="Only changes made by this key name.")
@click.option("--action", "actions", multiple=True, help="Only this action; repeat for several.")
@click.option("--since", help="From this ISO 8601 instant with its offset (inclusive).")
@click.option("--until", help="Before this ISO 8601 instant with its offset (exclusive).")
def export_audit_log(export_format, client_id, admin_id, actions, since, until) -> None:
    """Write every selected entry to stdout, newest first, as the API's export does."""
    given = {"format": export_format, "clientId": client_id, "adminId": admin_id,
             "action": list(actions) or None, "since": since, "until": until}
    try:
        query = AuditExportQuerySchema().load({name: value for name, value in given.items() if value is not None})
    except ValidationError as invalid:
        problems = "; ".join(f"{name}: {' '.join(map(str, messages))}" for name, messages in invalid.messages.items())
        raise click.UsageError(problems) from None
    for chunk in export_chunks(db.engine, AuditFilter.of(query), query["format"]):
        click.echo(chunk, nl=False)
