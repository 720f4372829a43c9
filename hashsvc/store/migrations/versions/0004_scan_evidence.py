"""evidence items opened by a scan (disk images, buckets, extractions)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        'scan_evidence',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('scan_id', sa.String(length=36), nullable=False),
        sa.Column('locator_hash', sa.String(length=64), nullable=False),
        sa.Column('locator', sa.Text(), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('md5', sa.String(length=32), nullable=True),
        sa.Column('stored_md5', sa.String(length=32), nullable=True),
        sa.Column('verified', sa.Boolean(), nullable=True),
        sa.Column('details', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['scan_id'], ['scans.id'],
                                name=op.f('fk_scan_evidence_scan_id_scans')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_evidence')),
        sa.UniqueConstraint('scan_id', 'locator_hash',
                            name=op.f('uq_scan_evidence_scan_id_locator_hash')),
    )
    op.create_index(op.f('ix_scan_evidence_scan_id'), 'scan_evidence', ['scan_id'],
                    unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f('ix_scan_evidence_scan_id'), table_name='scan_evidence')
    op.drop_table('scan_evidence')
