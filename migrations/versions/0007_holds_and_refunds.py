"""holds and refunds: credits reserved while a generation runs, and usage given back

- holds: one row per hold, in the month it was made in; it resolves once (captured, released)
  or lapses at expires_at (a sweep marks it expired in storage; reads go by the time alone).
- refunds: one row per refund of a month's usage, with the key that asked.
- usage_records gains held (what the month's open holds reserve: exact whenever a writer holds
  the client's quota row lock, never less than the truth between), and consumed, captured and
  refunded, so that generation_count = consumed + captured - refunded. Rows from before count
  their generations as consumed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 20:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

COUNTERS = ('held', 'consumed', 'captured', 'refunded')


def _id():
    return sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False)


def upgrade():
    op.create_table('holds',
    _id(),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('captured_count', sa.Integer(), nullable=True),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('key_name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('held', 'captured', 'released', 'expired')", name=op.f('ck_holds_status')),
    sa.CheckConstraint('count > 0', name=op.f('ck_holds_count')),
    sa.CheckConstraint('captured_count >= 0 AND captured_count <= count', name=op.f('ck_holds_captured_count')),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_holds_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds'))
    )
    op.create_index('ix_holds_client_id_desc', 'holds', ['client_id', 'id'], unique=False)
    op.create_index('ix_holds_open', 'holds', ['client_id', 'month', 'status', 'expires_at'], unique=False)
    op.create_index('ix_holds_status_expires_at', 'holds', ['status', 'expires_at'], unique=False)

    op.create_table('refunds',
    _id(),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('key_name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('count > 0', name=op.f('ck_refunds_count')),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_refunds_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refunds'))
    )
    op.create_index('ix_refunds_client_id_desc', 'refunds', ['client_id', 'id'], unique=False)

    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        for counter in COUNTERS:
            batch_op.add_column(sa.Column(counter, sa.BigInteger(), server_default='0', nullable=False))
            batch_op.create_check_constraint(op.f(f'ck_usage_records_{counter}'), f'{counter} >= 0')
    op.execute("UPDATE usage_records SET consumed = generation_count")


def downgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        for counter in reversed(COUNTERS):
            batch_op.drop_constraint(op.f(f'ck_usage_records_{counter}'), type_='check')
            batch_op.drop_column(counter)
    op.drop_index('ix_refunds_client_id_desc', table_name='refunds')
    op.drop_table('refunds')
    op.drop_index('ix_holds_status_expires_at', table_name='holds')
    op.drop_index('ix_holds_open', table_name='holds')
    op.drop_index('ix_holds_client_id_desc', table_name='holds')
    op.drop_table('holds')
