"""analysts' decisions on matches, and wipe records

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        'match_reviews',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('scan_id', sa.String(length=36), nullable=False),
        sa.Column('file_id', BIG_ID, nullable=False),
        sa.Column('decision', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('reviewer', sa.Text(), nullable=False),
        sa.Column('org_id', BIG_ID, nullable=True),
        sa.Column('key_id', BIG_ID, nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['scan_id'], ['scans.id'],
                                name=op.f('fk_match_reviews_scan_id_scans')),
        sa.ForeignKeyConstraint(['file_id'], ['scan_files.id'],
                                name=op.f('fk_match_reviews_file_id_scan_files')),
        sa.ForeignKeyConstraint(['org_id'], ['orgs.id'],
                                name=op.f('fk_match_reviews_org_id_orgs')),
        sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'],
                                name=op.f('fk_match_reviews_key_id_api_keys')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_match_reviews')),
    )
    op.create_index('ix_match_reviews_scan_file', 'match_reviews', ['scan_id', 'file_id'],
                    unique=False)
    op.create_table(
        'wipe_records',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('scan_id', sa.String(length=36), nullable=False),
        sa.Column('fields', sa.JSON(), nullable=False),
        sa.Column('recorded_by', sa.Text(), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['scan_id'], ['scans.id'],
                                name=op.f('fk_wipe_records_scan_id_scans')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_wipe_records')),
    )
    op.create_index(op.f('ix_wipe_records_scan_id'), 'wipe_records', ['scan_id'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f('ix_wipe_records_scan_id'), table_name='wipe_records')
    op.drop_table('wipe_records')
    op.drop_index('ix_match_reviews_scan_file', table_name='match_reviews')
    op.drop_table('match_reviews')
