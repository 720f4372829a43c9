"""encrypted local features of registered images

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        'image_features',
        sa.Column('image_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('blob', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['registered_images.id'],
                                name=op.f('fk_image_features_image_id_registered_images')),
        sa.PrimaryKeyConstraint('image_id', name=op.f('pk_image_features')),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table('image_features')
