"""one-time registration links for the victims' intake page

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        'intake_links',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('case_id', BIG_ID, nullable=False),
        sa.Column('code_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'],
                                name=op.f('fk_intake_links_case_id_cases')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_intake_links')),
        sa.UniqueConstraint('code_hash', name=op.f('uq_intake_links_code_hash')),
    )
    op.create_index(op.f('ix_intake_links_case_id'), 'intake_links', ['case_id'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f('ix_intake_links_case_id'), table_name='intake_links')
    op.drop_table('intake_links')
