"""indexes for searching the audit log across clients

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 20:40:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_credit_audit_log_client_action_id': ['client_id', 'action', 'id'],
    'ix_credit_audit_log_action_id': ['action', 'id'],
    'ix_credit_audit_log_admin_id_id': ['admin_id', 'id'],
    'ix_credit_audit_log_created_at': ['created_at'],
}


# Plain CREATE INDEX, never a batch operation: a SQLite batch could copy the table and lose
# its append-only trigger.
def upgrade():
    for name, columns in INDEXES.items():
        op.create_index(name, 'credit_audit_log', columns, unique=False)


def downgrade():
    for name in reversed(INDEXES):
        op.drop_index(name, table_name='credit_audit_log')
