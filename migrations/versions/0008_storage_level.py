"""storage: the bytes each client stores, and the admin's reconciliation of it

- quota_limits gains storage_used_bytes, a level (not a monthly count): what the client
  stores now, moved by the platform's deltas and set by an admin's reconciliation. It lives
  on the quota row, so one conditional UPDATE checks the quota and moves the level.
- audit_actions gains storage_reconcile.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 21:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

actions = sa.table('audit_actions', sa.column('name', sa.String()))


def upgrade():
    with op.batch_alter_table('quota_limits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('storage_used_bytes', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_check_constraint(op.f('ck_quota_limits_storage_used'), 'storage_used_bytes >= 0')
    op.bulk_insert(actions, [{'name': 'storage_reconcile'}])


def downgrade():
    reconciled = op.get_bind().exec_driver_sql(
        "SELECT COUNT(*) FROM credit_audit_log WHERE action = 'storage_reconcile'").scalar()
    if reconciled:
        raise RuntimeError(f"credit_audit_log holds {reconciled} storage_reconcile entries, which the previous "
                           "schema cannot hold; the downgrade would have to delete them.")
    op.execute(actions.delete().where(actions.c.name == 'storage_reconcile'))
    with op.batch_alter_table('quota_limits', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_quota_limits_storage_used'), type_='check')
        batch_op.drop_column('storage_used_bytes')
