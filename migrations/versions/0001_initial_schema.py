"""clients, quotas, usage, audit log, api keys, idempotency keys

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 12:43:45.958945

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('read', 'write', 'service')", name=op.f('ck_api_keys_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_name'), ['name'], unique=False)

    op.create_table('clients',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clients'))
    )
    op.create_table('idempotency_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('principal', sa.String(length=200), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
    sa.UniqueConstraint('principal', 'key', name=op.f('uq_idempotency_keys_principal'))
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_keys_created_at'), ['created_at'], unique=False)

    op.create_table('credit_audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('admin_id', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('previous_value', sa.Text(), nullable=True),
    sa.Column('new_value', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("action IN ('plan_change', 'credit_grant', 'limit_change', 'usage_reset')", name=op.f('ck_credit_audit_log_action')),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_credit_audit_log_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_audit_log'))
    )
    with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_credit_audit_log_client_created', ['client_id', 'created_at'], unique=False)
        batch_op.create_index('ix_credit_audit_log_client_id_desc', ['client_id', 'id'], unique=False)

    op.create_table('quota_limits',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('plan', sa.String(length=16), nullable=False),
    sa.Column('monthly_generation_limit', sa.Integer(), nullable=False),
    sa.Column('storage_quota_mb', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("plan IN ('free', 'starter', 'pro', 'enterprise')", name=op.f('ck_quota_limits_plan')),
    sa.CheckConstraint('monthly_generation_limit >= -1', name=op.f('ck_quota_limits_generation_limit')),
    sa.CheckConstraint('storage_quota_mb >= -1', name=op.f('ck_quota_limits_storage_quota')),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_quota_limits_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_quota_limits'))
    )
    op.create_table('usage_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('generation_count', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('generation_count >= 0', name=op.f('ck_usage_records_generation_count')),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_usage_records_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_records')),
    sa.UniqueConstraint('client_id', 'month', name=op.f('uq_usage_records_client_id'))
    )


    # The audit log is append-only: the database refuses updates (deletes stay possible,
    # for the cascade when a client is deleted).
    if op.get_bind().dialect.name == "postgresql":
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


def downgrade():
    op.execute("DROP TRIGGER IF EXISTS credit_audit_log_append_only" + (
        " ON credit_audit_log" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS credit_audit_log_refuse_update()")
    op.drop_table('usage_records')
    op.drop_table('quota_limits')
    with op.batch_alter_table('credit_audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_credit_audit_log_client_id_desc')
        batch_op.drop_index('ix_credit_audit_log_client_created')

    op.drop_table('credit_audit_log')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_created_at'))

    op.drop_table('idempotency_keys')
    op.drop_table('clients')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_name'))

    op.drop_table('api_keys')
