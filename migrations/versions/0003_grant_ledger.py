"""the grant ledger: credit_grants, this month's month-grants on usage_records, credit_void

Grants made before this revision are not back-filled: they stay in the audit log (and in
the stored limits), and the ledger starts empty.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:40:00.000000

"""
from contextlib import contextmanager

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

ACTIONS_BEFORE = ('plan_change', 'credit_grant', 'limit_change', 'usage_reset')
ACTIONS_AFTER = ACTIONS_BEFORE + ('credit_void',)


def _one_of(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


@contextmanager
def _triggers_kept(table):
    """SQLite's batch mode rebuilds the table, which drops its triggers (the append-only
    guard among them), and refuses to rename the rebuilt table while a trigger of another
    table (audit_heads') names it: set aside every trigger that mentions the table, put
    them back after."""
    bind = op.get_bind()
    saved = []
    if bind.dialect.name == 'sqlite':
        saved = bind.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND (tbl_name = ? OR sql LIKE ?)",
            (table, f'%{table}%'),
        ).all()
        for name, _ in saved:
            op.execute(f'DROP TRIGGER IF EXISTS "{name}"')
    yield
    for _, sql in saved:
        op.execute(sql)


def _audit_actions(actions):
    with _triggers_kept('credit_audit_log'):
        with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
            batch_op.drop_constraint(op.f('ck_credit_audit_log_action'), type_='check')
            batch_op.create_check_constraint(op.f('ck_credit_audit_log_action'), _one_of('action', actions))


def upgrade():
    op.create_table('credit_grants',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('admin_id', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('voided_by', sa.String(length=200), nullable=True),
    sa.Column('void_reason', sa.Text(), nullable=True),
    sa.CheckConstraint("scope IN ('permanent', 'month')", name=op.f('ck_credit_grants_scope')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_credit_grants_amount')),
    sa.CheckConstraint("(scope = 'month' AND month IS NOT NULL) OR (scope = 'permanent' AND month IS NULL)",
                       name=op.f('ck_credit_grants_month')),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_credit_grants_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_grants'))
    )
    with op.batch_alter_table('credit_grants', schema=None) as batch_op:
        batch_op.create_index('ix_credit_grants_client_id_desc', ['client_id', 'id'], unique=False)
        batch_op.create_index('ix_credit_grants_client_month', ['client_id', 'month'], unique=False)

    # Existing months have no month-grants.
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('granted', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_check_constraint(op.f('ck_usage_records_granted'), 'granted >= 0')

    _audit_actions(ACTIONS_AFTER)


def downgrade():
    # An audit entry is never deleted by a migration: with voids recorded, stay on this revision.
    voids = op.get_bind().exec_driver_sql(
        "SELECT COUNT(*) FROM credit_audit_log WHERE action = 'credit_void'"
    ).scalar()
    if voids:
        raise RuntimeError(
            f"credit_audit_log holds {voids} credit_void entries, which the previous schema cannot "
            "hold; the downgrade would have to delete them."
        )
    _audit_actions(ACTIONS_BEFORE)

    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_usage_records_granted'), type_='check')
        batch_op.drop_column('granted')

    with op.batch_alter_table('credit_grants', schema=None) as batch_op:
        batch_op.drop_index('ix_credit_grants_client_month')
        batch_op.drop_index('ix_credit_grants_client_id_desc')

    op.drop_table('credit_grants')
