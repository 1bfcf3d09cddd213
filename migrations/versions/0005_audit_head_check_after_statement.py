"""PostgreSQL: the audit head's advance is checked after its statement, not before

The check (a head advances by exactly one, to an entry that exists with the head's count and
hash) is the same function; run AFTER UPDATE it sees an entry inserted by the same statement,
so a change, its entry and the head's advance can be one statement. A refused advance still
aborts the statement. DELETE stays checked BEFORE. SQLite's write path is unchanged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 05:00:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade():
    if not _postgresql():
        return
    op.execute("DROP TRIGGER audit_heads_advance_only ON audit_heads")
    op.execute("CREATE TRIGGER audit_heads_advance_only AFTER UPDATE ON audit_heads "
               "FOR EACH ROW EXECUTE FUNCTION audit_heads_advance_only()")
    op.execute("CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads "
               "FOR EACH ROW EXECUTE FUNCTION audit_heads_advance_only()")


def downgrade():
    if not _postgresql():
        return
    op.execute("DROP TRIGGER audit_heads_no_delete ON audit_heads")
    op.execute("DROP TRIGGER audit_heads_advance_only ON audit_heads")
    op.execute("CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE OR DELETE ON audit_heads "
               "FOR EACH ROW EXECUTE FUNCTION audit_heads_advance_only()")
