"""`flask audit ...`: prove and read the audit log."""

import json
import sys
import time
from contextlib import nullcontext

import click
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError
from sqlalchemy.orm import Session

from .. import services
from ..audit.export import export_chunks
from ..audit.reader import AuditFilter
from ..audit.verify import Anchor
from ..extensions import db
from ..months import iso_utc
from ..schemas.audit import EXPORT_FORMATS, AuditExportQuerySchema

audit_cli = AppGroup("audit", help="Prove and read the audit log: verify its hash chains, export their heads, export entries.")


@audit_cli.command("heads")
def audit_heads() -> None:
    """Print each client's stored head as a JSON line, to keep outside the database."""
    for head in services.audit_verifier().heads():
        click.echo(json.dumps({
            "clientId": head.client_id, "entryCount": head.entry_count, "lastEntryId": head.last_entry_id,
            "hash": head.hash, "updatedAt": iso_utc(head.updated_at),
        }, separators=(",", ":")))


def _read_anchors(file) -> list[Anchor]:
    anchors = []
    try:
        lines = file.read().splitlines()
    except UnicodeDecodeError:
        raise click.BadParameter("is not UTF-8 text: give a file written by `flask audit heads`",
                                 param_hint="--against") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            head = json.loads(line)
            anchor = Anchor(head["clientId"], head["entryCount"], head["hash"])
        except (ValueError, TypeError, KeyError) as error:
            raise click.BadParameter(f"line {number} is not a head written by `flask audit heads` ({error})",
                                     param_hint="--against") from None
        if not (isinstance(anchor.client_id, str) and isinstance(anchor.entry_count, int)
                and not isinstance(anchor.entry_count, bool) and isinstance(anchor.hash, str)
                and anchor.entry_count >= 0):
            raise click.BadParameter(f"line {number} has a field of the wrong type", param_hint="--against")
        anchors.append(anchor)
    return anchors


@audit_cli.command("verify")
@click.option("--client", "client_id", default=None, help="Only this client's chain.")
@click.option("--against", type=click.File("r", encoding="utf-8"), default=None,
              help="Heads saved earlier by `flask audit heads`: also catch a chain rolled back since.")
@click.option("--replica", "on_replica", is_flag=True,
              help="Read the log from DATABASE_REPLICA_URL, sparing the primary.")
def audit_verify(client_id: str | None, against, on_replica: bool) -> None:
    """Recompute every audit chain and check it against the stored heads.

    Exits 0 with a one-line summary when all is intact; exits 1 with one line per broken
    client naming the first bad entry.
    """
    anchors = _read_anchors(against) if against else []
    replica = current_app.extensions["read_replica"]
    if on_replica and replica.engine is None:
        raise click.UsageError("--replica needs DATABASE_REPLICA_URL to be set.")
    verifier = services.audit_verifier(Session(replica.engine) if on_replica else None)
    started = time.monotonic()
    if sys.stdout.isatty():
        bar = click.progressbar(length=verifier.count_entries(client_id), label="Verifying audit chains")
    else:
        bar = nullcontext(None)
    with bar as progress:
        result = verifier.verify(client_id, anchors, progress=progress.update if progress else lambda n: None)
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
