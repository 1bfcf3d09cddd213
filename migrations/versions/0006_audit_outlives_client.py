"""audit entries outlive their client; heads advance by trigger; a runtime role

- credit_audit_log and audit_heads lose their foreign keys to clients: deleting a client
  (which now records a client_deleted entry first) keeps its whole chain.
- The actions an entry may have are rows of audit_actions (a foreign key) instead of a CHECK,
  so a later revision adds an action with an INSERT rather than rebuilding the log on SQLite.
- A head advances by a trigger on the entry's INSERT, so the service's role needs no UPDATE
  on the audit tables; the head's own check (0005) still runs on every advance.
- UPDATE, DELETE and TRUNCATE of entries and heads are refused without exception, and so is
  a head inserted by hand with anything but an empty chain.
- PostgreSQL: the role credits_runtime (NOLOGIN) gets what the service needs and no more:
  SELECT and INSERT on the audit tables, no TRUNCATE, no DDL. Log in as a member of it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 18:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

GENESIS = '0' * 64
ACTIONS = ('plan_change', 'credit_grant', 'limit_change', 'usage_reset', 'credit_void', 'client_deleted')
RUNTIME_ROLE = 'credits_runtime'

POSTGRESQL_UP = [
    # Entries: no UPDATE or DELETE, ever (the cascade exception is gone), and no TRUNCATE.
    """
    CREATE OR REPLACE FUNCTION credit_audit_log_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'credit_audit_log is append-only: % refused', TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER credit_audit_log_no_truncate BEFORE TRUNCATE ON credit_audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION credit_audit_log_append_only()",
    # Heads: one step forward to an existing entry (checked after the statement, as 0005 set),
    # no DELETE, no TRUNCATE.
    """
    CREATE OR REPLACE FUNCTION audit_heads_advance_only() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'UPDATE'
           AND NEW.client_id = OLD.client_id
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
    "CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_heads_advance_only()",
    f"""
    CREATE FUNCTION audit_heads_start_empty() RETURNS trigger AS $$
    BEGIN
        IF NEW.entry_count = 0 AND NEW.last_entry_id IS NULL AND NEW.hash = '{GENESIS}' THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit_heads start empty: a head with entries cannot be inserted';
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER audit_heads_start_empty BEFORE INSERT ON audit_heads "
    "FOR EACH ROW EXECUTE FUNCTION audit_heads_start_empty()",
    # The owner's rights, so a role that may only INSERT entries still advances their head.
    """
    CREATE FUNCTION credit_audit_log_advance_head() RETURNS trigger
    SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    BEGIN
        UPDATE audit_heads SET entry_count = NEW.seq, last_entry_id = NEW.id, hash = NEW.hash,
                               updated_at = NEW.created_at
         WHERE client_id = NEW.client_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'client % has no audit head', NEW.client_id;
        END IF;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER credit_audit_log_advance_head AFTER INSERT ON credit_audit_log "
    "FOR EACH ROW EXECUTE FUNCTION credit_audit_log_advance_head()",
]

POSTGRESQL_DOWN = [
    "DROP TRIGGER credit_audit_log_advance_head ON credit_audit_log",
    "DROP FUNCTION credit_audit_log_advance_head()",
    "DROP TRIGGER audit_heads_start_empty ON audit_heads",
    "DROP FUNCTION audit_heads_start_empty()",
    "DROP TRIGGER audit_heads_no_truncate ON audit_heads",
    "DROP TRIGGER credit_audit_log_no_truncate ON credit_audit_log",
    # 0002's functions, with the exception for a deleted client's cascade.
    """
    CREATE OR REPLACE FUNCTION credit_audit_log_append_only() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'credit_audit_log is append-only: % refused', TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE OR REPLACE FUNCTION audit_heads_advance_only() RETURNS trigger AS $$
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
]

# The head's one-step rule, as 0002 wrote it for SQLite (COALESCE: a NULL must refuse).
_SQLITE_ADVANCE_RULE = (
    "NEW.client_id = OLD.client_id AND NEW.entry_count = OLD.entry_count + 1 "
    "AND NEW.last_entry_id > COALESCE(OLD.last_entry_id, 0) "
    "AND EXISTS (SELECT 1 FROM credit_audit_log e WHERE e.id = NEW.last_entry_id "
    "AND e.client_id = NEW.client_id AND e.seq = NEW.entry_count AND e.hash = NEW.hash)"
)
SQLITE_TRIGGERS = [
    "CREATE TRIGGER credit_audit_log_no_update BEFORE UPDATE ON credit_audit_log "
    "BEGIN SELECT RAISE(ABORT, 'credit_audit_log is append-only: UPDATE refused'); END",
    "CREATE TRIGGER credit_audit_log_no_delete BEFORE DELETE ON credit_audit_log "
    "BEGIN SELECT RAISE(ABORT, 'credit_audit_log is append-only: DELETE refused'); END",
    f"CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads WHEN NOT COALESCE({_SQLITE_ADVANCE_RULE}, 0) "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only advance by one existing entry: UPDATE refused'); END",
    "CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only advance by one existing entry: DELETE refused'); END",
    "CREATE TRIGGER audit_heads_start_empty BEFORE INSERT ON audit_heads "
    f"WHEN NOT COALESCE(NEW.entry_count = 0 AND NEW.last_entry_id IS NULL AND NEW.hash = '{GENESIS}', 0) "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads start empty: a head with entries cannot be inserted'); END",
    "CREATE TRIGGER credit_audit_log_advance_head AFTER INSERT ON credit_audit_log BEGIN "
    "SELECT RAISE(ABORT, 'the client has no audit head') "
    "WHERE NOT EXISTS (SELECT 1 FROM audit_heads WHERE client_id = NEW.client_id); "
    "UPDATE audit_heads SET entry_count = NEW.seq, last_entry_id = NEW.id, hash = NEW.hash, "
    "updated_at = NEW.created_at WHERE client_id = NEW.client_id; END",
]
# 0002's SQLite triggers, with the cascade exception.
SQLITE_TRIGGERS_BEFORE = [
    "CREATE TRIGGER credit_audit_log_no_update BEFORE UPDATE ON credit_audit_log "
    "BEGIN SELECT RAISE(ABORT, 'credit_audit_log is append-only: UPDATE refused'); END",
    "CREATE TRIGGER credit_audit_log_no_delete BEFORE DELETE ON credit_audit_log "
    "WHEN EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) "
    "BEGIN SELECT RAISE(ABORT, 'credit_audit_log is append-only: DELETE refused'); END",
    f"CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads WHEN NOT COALESCE({_SQLITE_ADVANCE_RULE}, 0) "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only advance by one existing entry: UPDATE refused'); END",
    "CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads "
    "WHEN EXISTS (SELECT 1 FROM clients WHERE id = OLD.client_id) "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only advance by one existing entry: DELETE refused'); END",
]
SQLITE_TRIGGER_NAMES = ('credit_audit_log_no_update', 'credit_audit_log_no_delete', 'audit_heads_advance_only',
                        'audit_heads_no_delete', 'audit_heads_start_empty', 'credit_audit_log_advance_head')


def _postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def _one_of(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _grant_runtime_role() -> None:
    op.execute(f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{RUNTIME_ROLE}') THEN
                CREATE ROLE {RUNTIME_ROLE} NOLOGIN;
            END IF;
        END $$
    """)
    op.execute(f"GRANT USAGE ON SCHEMA public TO {RUNTIME_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {RUNTIME_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {RUNTIME_ROLE}")
    # Tables a later revision creates get the same, from whichever role runs migrations.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {RUNTIME_ROLE}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {RUNTIME_ROLE}")
    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON credit_audit_log, audit_heads, audit_actions, alembic_version "
               f"FROM {RUNTIME_ROLE}")
    op.execute(f"REVOKE INSERT ON audit_actions, alembic_version FROM {RUNTIME_ROLE}")


def _revoke_runtime_role() -> None:
    op.execute(f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{RUNTIME_ROLE}') THEN
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {RUNTIME_ROLE};
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {RUNTIME_ROLE};
                REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {RUNTIME_ROLE};
                REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {RUNTIME_ROLE};
                REVOKE USAGE ON SCHEMA public FROM {RUNTIME_ROLE};
            END IF;
        END $$
    """)


def upgrade():
    actions = op.create_table('audit_actions',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_audit_actions'))
    )
    op.bulk_insert(actions, [{'name': name} for name in ACTIONS])

    if _postgresql():
        op.drop_constraint(op.f('fk_credit_audit_log_client_id_clients'), 'credit_audit_log', type_='foreignkey')
        op.drop_constraint(op.f('ck_credit_audit_log_action'), 'credit_audit_log', type_='check')
        op.create_foreign_key(op.f('fk_credit_audit_log_action_audit_actions'), 'credit_audit_log',
                              'audit_actions', ['action'], ['name'])
        op.drop_constraint(op.f('fk_audit_heads_client_id_clients'), 'audit_heads', type_='foreignkey')
        for statement in POSTGRESQL_UP:
            op.execute(statement)
        _grant_runtime_role()
        return

    # SQLite rebuilds both tables, which drops their triggers; the new set is made after.
    for name in SQLITE_TRIGGER_NAMES:
        op.execute(f'DROP TRIGGER IF EXISTS "{name}"')
    with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('fk_credit_audit_log_client_id_clients'), type_='foreignkey')
        batch_op.drop_constraint(op.f('ck_credit_audit_log_action'), type_='check')
        batch_op.create_foreign_key(op.f('fk_credit_audit_log_action_audit_actions'), 'audit_actions',
                                    ['action'], ['name'])
    with op.batch_alter_table('audit_heads', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('fk_audit_heads_client_id_clients'), type_='foreignkey')
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade():
    bind = op.get_bind()
    # An audit entry is never deleted by a migration: a chain whose client is gone, or a
    # client_deleted entry, cannot go back to the schema that cascaded deletes.
    orphans = bind.exec_driver_sql(
        "SELECT COUNT(*) FROM audit_heads h WHERE NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = h.client_id)"
    ).scalar()
    if orphans:
        raise RuntimeError(f"{orphans} audit chain(s) belong to deleted clients, which the previous schema "
                           "cannot hold; the downgrade would have to delete them.")
    if _postgresql():
        _revoke_runtime_role()
        for statement in POSTGRESQL_DOWN:
            op.execute(statement)
        op.create_foreign_key(op.f('fk_audit_heads_client_id_clients'), 'audit_heads', 'clients',
                              ['client_id'], ['id'], ondelete='CASCADE')
        op.drop_constraint(op.f('fk_credit_audit_log_action_audit_actions'), 'credit_audit_log', type_='foreignkey')
        op.create_check_constraint(op.f('ck_credit_audit_log_action'), 'credit_audit_log',
                                   _one_of('action', ACTIONS[:-1]))
        op.create_foreign_key(op.f('fk_credit_audit_log_client_id_clients'), 'credit_audit_log', 'clients',
                              ['client_id'], ['id'], ondelete='CASCADE')
    else:
        for name in SQLITE_TRIGGER_NAMES:
            op.execute(f'DROP TRIGGER IF EXISTS "{name}"')
        with op.batch_alter_table('audit_heads', schema=None) as batch_op:
            batch_op.create_foreign_key(op.f('fk_audit_heads_client_id_clients'), 'clients',
                                        ['client_id'], ['id'], ondelete='CASCADE')
        with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
            batch_op.drop_constraint(op.f('fk_credit_audit_log_action_audit_actions'), type_='foreignkey')
            batch_op.create_check_constraint(op.f('ck_credit_audit_log_action'), _one_of('action', ACTIONS[:-1]))
            batch_op.create_foreign_key(op.f('fk_credit_audit_log_client_id_clients'), 'clients',
                                        ['client_id'], ['id'], ondelete='CASCADE')
        for statement in SQLITE_TRIGGERS_BEFORE:
            op.execute(statement)
    op.drop_table('audit_actions')
