"""orgs keys audit and scan jobs

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('org_id', sa.BigInteger(), nullable=True),
    sa.Column('key_id', sa.BigInteger(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=32), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('entry_hash', name=op.f('uq_audit_log_entry_hash'))
    )
    op.create_table('orgs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orgs')),
    sa.UniqueConstraint('name', name=op.f('uq_orgs_name'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=128), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_api_keys_org_id_orgs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_org_id'), ['org_id'], unique=False)

    op.create_table('scan_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scan_id', sa.String(length=36), nullable=False),
    sa.Column('batch_no', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('entries', sa.JSON(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_scan_batches_scan_id_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_batches')),
    sa.UniqueConstraint('scan_id', 'batch_no', name=op.f('uq_scan_batches_scan_id_batch_no'))
    )
    with op.batch_alter_table('scan_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scan_batches_scan_id'), ['scan_id'], unique=False)

    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index(batch_op.f('ix_cases_org_id'), ['org_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_cases_org_id_orgs'), 'orgs', ['org_id'], ['id'])

    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('files_enumerated', sa.BigInteger(), nullable=False, server_default=sa.text('0')))
        batch_op.add_column(sa.Column('batches_total', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cancel_requested', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_scans_org_id'), ['org_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_scans_org_id_orgs'), 'orgs', ['org_id'], ['id'])



def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_scans_org_id_orgs'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_scans_org_id'))
        batch_op.drop_column('error')
        batch_op.drop_column('cancel_requested')
        batch_op.drop_column('batches_total')
        batch_op.drop_column('files_enumerated')
        batch_op.drop_column('org_id')

    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_cases_org_id_orgs'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_cases_org_id'))
        batch_op.drop_column('org_id')

    with op.batch_alter_table('scan_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scan_batches_scan_id'))

    op.drop_table('scan_batches')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_org_id'))

    op.drop_table('api_keys')
    op.drop_table('orgs')
    op.drop_table('audit_log')
