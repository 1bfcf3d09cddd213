"""audit log as a keyed hash chain per client: seq, hashes, key id, audit_heads, triggers

Entries that already exist are chained in id order per client, signed with the key the app
is configured with (AUDIT_HMAC_KEYS, else instance/audit-hmac.key: the app does not start,
so neither does this migration, without one). Triggers then refuse UPDATE and DELETE of
entries and heads, except the cascade of a deleted client and a head's one step forward.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:40:00

"""
from datetime import UTC

import sqlalchemy as sa
from alembic import op
from flask import current_app

# The encoding is a published contract (README.md, "Tamper-evident audit log") that never changes, so this
# revision can share the service's implementation of it.
from credits_service.audit.chain import GENESIS, canonical_entry, chain_hash

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

BATCH = 10_000

POSTGRESQL_TRIGGERS = [
    """
    CREATE FUNCTION credit_audit_log_append_only() RETURNS trigger AS $$
    BEGIN
        -- The FK cascade of a deleted client: the client row is gone when this fires.
        IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'credit_audit_log is append-only: % refused', TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER credit_audit_log_append_only BEFORE UPDATE OR DELETE ON credit_audit_log "
    "FOR EACH ROW EXECUTE FUNCTION credit_audit_log_append_only()",
    """
    CREATE FUNCTION audit_heads_advance_only() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            IF NOT EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) THEN
                RETURN OLD;
            END IF;
        ELSIF NEW.client_id = OLD.client_id
              AND NEW.entry_count = OLD.entry_count + 1
              AND NEW.last_entry_id > COALESCE(OLD.last_entry_id, 0)
              AND EXISTS (SELECT 1 FROM credit_audit_log e
                          WHERE e.id = NEW.last_entry_id AND e.client_id = NEW.client_id
                            AND e.seq = NEW.entry_count AND e.hash = NEW.hash) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit_heads only advance by one existing entry: % refused', TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE OR DELETE ON audit_heads "
    "FOR EACH ROW EXECUTE FUNCTION audit_heads_advance_only()",
]

SQLITE_TRIGGERS = [
    "CREATE TRIGGER credit_audit_log_no_update BEFORE UPDATE ON credit_audit_log "
    "BEGIN SELECT RAISE(ABORT, 'credit_audit_log is append-only: UPDATE refused'); END",
    # With ON DELETE CASCADE the client row is gone when its entries are deleted.
    "CREATE TRIGGER credit_audit_log_no_delete BEFORE DELETE ON credit_audit_log "
    "WHEN EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) "
    "BEGIN SELECT RAISE(ABORT, 'credit_audit_log is append-only: DELETE refused'); END",
    # COALESCE: a NULL anywhere in the rule must refuse, not let the update through.
    "CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads "
    "WHEN NOT COALESCE(NEW.client_id = OLD.client_id "
    "AND NEW.entry_count = OLD.entry_count + 1 "
    "AND NEW.last_entry_id > COALESCE(OLD.last_entry_id, 0) "
    "AND EXISTS (SELECT 1 FROM credit_audit_log e WHERE e.id = NEW.last_entry_id "
    "AND e.client_id = NEW.client_id AND e.seq = NEW.entry_count AND e.hash = NEW.hash), 0) "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only advance by one existing entry: UPDATE refused'); END",
    "CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads "
    "WHEN EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only advance by one existing entry: DELETE refused'); END",
]

entries = sa.table(
    'credit_audit_log',
    sa.column('id', sa.BigInteger()), sa.column('client_id', sa.String()),
    sa.column('admin_id', sa.String()), sa.column('action', sa.String()),
    sa.column('details', sa.JSON()), sa.column('previous_value', sa.Text()),
    sa.column('new_value', sa.Text()), sa.column('created_at', sa.DateTime(timezone=True)),
    sa.column('seq', sa.BigInteger()), sa.column('previous_hash', sa.String()),
    sa.column('hash', sa.String()), sa.column('key_id', sa.String()),
)
clients = sa.table('clients', sa.column('id', sa.String()), sa.column('created_at', sa.DateTime(timezone=True)))
heads = sa.table(
    'audit_heads',
    sa.column('client_id', sa.String()), sa.column('entry_count', sa.BigInteger()),
    sa.column('last_entry_id', sa.BigInteger()), sa.column('hash', sa.String()),
    sa.column('updated_at', sa.DateTime(timezone=True)),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def _utc(moment):
    # SQLite keeps no offset; the app stores UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _chain_existing_entries() -> None:
    bind = op.get_bind()
    keys = current_app.extensions['audit_keys']
    secret = keys.secrets[keys.signing_id]
    chains = {}  # client id -> [count, hash, last entry id, last created_at]
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(entries.c.id, entries.c.client_id, entries.c.admin_id, entries.c.action,
                      entries.c.details, entries.c.previous_value, entries.c.new_value,
                      entries.c.created_at)
            .where(entries.c.id > last_id).order_by(entries.c.id).limit(BATCH)
        ).all()
        if not rows:
            break
        updates = []
        for entry_id, client_id, admin_id, action, details, previous_value, new_value, created_at in rows:
            count, previous_hash, _, _ = chains.get(client_id, (0, GENESIS, None, None))
            created_at = _utc(created_at)
            entry_hash = chain_hash(secret, previous_hash, canonical_entry(
                entry_id, client_id, count + 1, admin_id, action, details, previous_value,
                new_value, created_at))
            chains[client_id] = (count + 1, entry_hash, entry_id, created_at)
            updates.append({'entry_id': entry_id, 'seq': count + 1, 'previous_hash': previous_hash,
                            'hash': entry_hash, 'key_id': keys.signing_id})
        bind.execute(
            entries.update().where(entries.c.id == sa.bindparam('entry_id')).values(
                seq=sa.bindparam('seq'), previous_hash=sa.bindparam('previous_hash'),
                hash=sa.bindparam('hash'), key_id=sa.bindparam('key_id')),
            updates,
        )
        last_id = rows[-1][0]
    head_rows = []
    for client_id, created_at in bind.execute(sa.select(clients.c.id, clients.c.created_at)).all():
        count, head_hash, last_entry_id, last_at = chains.get(client_id, (0, GENESIS, None, None))
        head_rows.append({'client_id': client_id, 'entry_count': count, 'last_entry_id': last_entry_id,
                          'hash': head_hash, 'updated_at': last_at or _utc(created_at)})
    if head_rows:
        bind.execute(heads.insert(), head_rows)


def upgrade():
    # 0001's guard refused every UPDATE; the existing entries are updated once, below.
    op.execute("DROP TRIGGER IF EXISTS credit_audit_log_append_only" + (" ON credit_audit_log" if _postgresql() else ""))
    if _postgresql():
        op.execute("DROP FUNCTION IF EXISTS credit_audit_log_refuse_update()")

    with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('previous_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('key_id', sa.String(length=32), nullable=True))

    op.create_table('audit_heads',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('entry_count', sa.BigInteger(), nullable=False),
    sa.Column('last_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_audit_heads_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_audit_heads'))
    )

    _chain_existing_entries()

    with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column('previous_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('key_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_credit_audit_log_client_id'), ['client_id', 'seq'])

    for statement in POSTGRESQL_TRIGGERS if _postgresql() else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade():
    if _postgresql():
        op.execute("DROP TRIGGER IF EXISTS audit_heads_advance_only ON audit_heads")
        op.execute("DROP TRIGGER IF EXISTS credit_audit_log_append_only ON credit_audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_heads_advance_only()")
        op.execute("DROP FUNCTION IF EXISTS credit_audit_log_append_only()")
    else:
        for name in ("audit_heads_advance_only", "audit_heads_no_delete",
                     "credit_audit_log_no_update", "credit_audit_log_no_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")

    op.drop_table('audit_heads')
    with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_credit_audit_log_client_id'), type_='unique')
        batch_op.drop_column('key_id')
        batch_op.drop_column('hash')
        batch_op.drop_column('previous_hash')
        batch_op.drop_column('seq')

    # 0001's guard against updates, as it was.
    if _postgresql():
        op.execute(
            """
            CREATE FUNCTION credit_audit_log_refuse_update() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'credit_audit_log is append-only';
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER credit_audit_log_append_only BEFORE UPDATE ON credit_audit_log "
            "FOR EACH ROW EXECUTE FUNCTION credit_audit_log_refuse_update()"
        )
    else:
        op.execute(
            "CREATE TRIGGER credit_audit_log_append_only BEFORE UPDATE ON credit_audit_log "
            "BEGIN SELECT RAISE(ABORT, 'credit_audit_log is append-only'); END"
        )
