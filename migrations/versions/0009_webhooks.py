"""webhooks: endpoints, the event outbox and its deliveries, and usage thresholds' state

- webhook_endpoints: where events go, which types, the signing secret (and the one before a
  rotation, kept for a day), enabled or not.
- webhook_events: the outbox. An event is written in the transaction of the change it
  describes; webhook_deliveries holds one row per event and endpoint, claimed and attempted by
  the delivery worker (a lease, so a worker that dies gives its claim back).
- usage_thresholds: the thresholds a client's month has reached (a row each); a row is removed
  when usage drops below it or the limit rises above it, so the next crossing fires again.
- audit_actions gains the admin acts on endpoints.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 22:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

ACTIONS = ('webhook_created', 'webhook_updated', 'webhook_deleted', 'webhook_secret_rotated', 'webhook_disabled')
actions = sa.table('audit_actions', sa.column('name', sa.String()))


def _id():
    return sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False)


def upgrade():
    op.create_table('webhook_endpoints',
    _id(),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('events', sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('secret', sa.String(length=200), nullable=False),
    sa.Column('previous_secret', sa.String(length=200), nullable=True),
    sa.Column('previous_secret_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints'))
    )
    op.create_table('webhook_events',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events'))
    )
    op.create_index('ix_webhook_events_created_at', 'webhook_events', ['created_at'], unique=False)
    op.create_table('webhook_deliveries',
    _id(),
    sa.Column('endpoint_id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_attempt', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f('ck_webhook_deliveries_status')),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'],
                            name=op.f('fk_webhook_deliveries_endpoint_id_webhook_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id'],
                            name=op.f('fk_webhook_deliveries_event_id_webhook_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['status', 'next_attempt_at'], unique=False)
    op.create_index('ix_webhook_deliveries_endpoint_id_desc', 'webhook_deliveries', ['endpoint_id', 'id'],
                    unique=False)
    op.create_index('ix_webhook_deliveries_event_id', 'webhook_deliveries', ['event_id'], unique=False)
    op.create_table('usage_thresholds',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('reached_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_usage_thresholds_client_id_clients'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_id', 'month', 'threshold', name=op.f('pk_usage_thresholds'))
    )
    op.bulk_insert(actions, [{'name': name} for name in ACTIONS])


def downgrade():
    acts = op.get_bind().exec_driver_sql(
        "SELECT COUNT(*) FROM credit_audit_log WHERE action IN " + str(ACTIONS)).scalar()
    if acts:
        raise RuntimeError(f"credit_audit_log holds {acts} webhook entries, which the previous schema cannot "
                           "hold; the downgrade would have to delete them.")
    op.execute(actions.delete().where(actions.c.name.in_(ACTIONS)))
    op.drop_table('usage_thresholds')
    op.drop_index('ix_webhook_deliveries_event_id', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_endpoint_id_desc', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhook_events_created_at', table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_table('webhook_endpoints')
