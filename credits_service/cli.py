"""`flask keys ...`, `flask idempotency ...` and `flask audit ...`."""

import json
import sys
import time
from contextlib import nullcontext

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
from .services.audit import Anchor, AuditTrail
from .services.audit_export import export_chunks
from .services.audit_log import AuditFilter
from .services.keys import ApiKeys, is_expired

keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")
idempotency_cli = AppGroup("idempotency", help="Maintain stored Idempotency-Key answers.")
audit_cli = AppGroup("audit", help="Prove and read the audit log: verify its hash chains, export their heads, export entries.")

def _api_keys() -> ApiKeys:
    return ApiKeys(db.session(), current_app.config["CLOCK"])


def _audit_trail() -> AuditTrail:
    return AuditTrail(db.session(), current_app.extensions["audit_keys"])


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
    """Delete stored Idempotency-Key answers older than IDEMPOTENCY_TTL_HOURS, in batches."""
    purged = idempotency_keys().purge(current_app.config["IDEMPOTENCY_PURGE_BATCH"])
    click.echo(f"Deleted {purged} expired idempotency key(s).")


@audit_cli.command("heads")
def audit_heads() -> None:
    """Print each client's stored head as a JSON line, to keep outside the database."""
    for head in _audit_trail().heads():
        click.echo(json.dumps({
            "clientId": head.client_id, "entryCount": head.entry_count, "lastEntryId": head.last_entry_id,
            "hash": head.hash, "updatedAt": iso_utc(head.updated_at),
        }, separators=(",", ":")))


def _read_anchors(file) -> list[Anchor]:
    anchors = []
    for number, line in enumerate(file, start=1):
        if not line.strip():
            continue
        try:
            head = json.loads(line)
            anchor = Anchor(head["clientId"], head["entryCount"], head["hash"])
        except (ValueError, TypeError, KeyError) as error:
            raise click.BadParameter(f"line {number} is not a head written by `flask audit heads` ({error})",
                                     param_hint="--against") from None
        if not (isinstance(anchor.client_id, str) and isinstance(anchor.entry_count, int)
                and isinstance(anchor.hash, str) and anchor.entry_count >= 0):
            raise click.BadParameter(f"line {number} has a field of the wrong type", param_hint="--against")
        anchors.append(anchor)
    return anchors


@audit_cli.command("verify")
@click.option("--client", "client_id", default=None, help="Only this client's chain.")
@click.option("--against", type=click.File("r", encoding="utf-8"), default=None,
              help="Heads saved earlier by `flask audit heads`: also catch a chain rolled back since.")
def audit_verify(client_id: str | None, against) -> None:
    """Recompute every audit chain and check it against the stored heads.

    Exits 0 with a one-line summary when all is intact; exits 1 with one line per broken
    client naming the first bad entry.
    """
    anchors = _read_anchors(against) if against else []
    trail = _audit_trail()
    started = time.monotonic()
    if sys.stdout.isatty():
        bar = click.progressbar(length=trail.count_entries(client_id), label="Verifying audit chains")
    else:
        bar = nullcontext(None)
    with bar as progress:
        result = trail.verify(client_id, anchors, progress=progress.update if progress else lambda n: None)
    seconds = time.monotonic() - started
    for failure in result.failures:
        click.echo(str(failure))
    scope = f"client {client_id!r}" if client_id else f"{result.clients} client(s)"
    if result.intact:
        click.echo(f"Audit log intact: {result.entries} entries of {scope} verified in {seconds:.1f} s.")
        return
    click.echo(f"Audit log NOT intact: {len(result.failures)} broken chain(s) among {scope}, "
               f"{result.entries} entries read in {seconds:.1f} s.")
    sys.exit(1)


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
