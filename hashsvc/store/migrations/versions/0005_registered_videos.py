"""registered videos: a row per video and per kept frame; which frames made a scan match

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('registered_images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('media', sa.String(length=8), nullable=False,
                                      server_default='image'))
        batch_op.add_column(sa.Column('frame_no', sa.Integer(), nullable=False,
                                      server_default=sa.text('0')))
        batch_op.add_column(sa.Column('parent_id',
                                      sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.add_column(sa.Column('frame_t', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('duration', sa.Float(), nullable=True))
        batch_op.drop_constraint(batch_op.f('uq_registered_images_case_id_sha256'),
                                 type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_registered_images_case_id_sha256_frame_no'),
            ['case_id', 'sha256', 'frame_no'])
        batch_op.create_index(batch_op.f('ix_registered_images_parent_id'), ['parent_id'],
                              unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_registered_images_parent_id_registered_images'),
            'registered_images', ['parent_id'], ['id'])

    with op.batch_alter_table('scan_matches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('video', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert this revision (registered frames are deleted: the old schema cannot hold them)."""
    with op.batch_alter_table('scan_matches', schema=None) as batch_op:
        batch_op.drop_column('video')

    op.execute("DELETE FROM bank_hashes WHERE image_id IN "
               "(SELECT id FROM registered_images WHERE parent_id IS NOT NULL)")
    op.execute("DELETE FROM registered_images WHERE parent_id IS NOT NULL")
    with op.batch_alter_table('registered_images', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_registered_images_parent_id_registered_images'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_registered_images_parent_id'))
        batch_op.drop_constraint(batch_op.f('uq_registered_images_case_id_sha256_frame_no'),
                                 type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_registered_images_case_id_sha256'),
                                          ['case_id', 'sha256'])
        batch_op.drop_column('duration')
        batch_op.drop_column('frame_t')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('frame_no')
        batch_op.drop_column('media')
