"""initial schema

Revision ID: 0001
Revises: 
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('bank_changes',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hash_id', sa.BigInteger(), nullable=False),
    sa.Column('op', sa.String(length=8), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('image_id', sa.BigInteger(), nullable=False),
    sa.Column('variant', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_bank_changes'))
    )
    with op.batch_alter_table('bank_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bank_changes_hash_id'), ['hash_id'], unique=False)

    op.create_table('cases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('ref', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases')),
    sa.UniqueConstraint('ref', name=op.f('uq_cases_ref'))
    )
    op.create_table('scans',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('settings', sa.JSON(), nullable=True),
    sa.Column('bank_cursor', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scans'))
    )
    op.create_table('registered_images',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('case_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('md5', sa.String(length=32), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_registered_images_case_id_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registered_images')),
    sa.UniqueConstraint('case_id', 'sha256', name=op.f('uq_registered_images_case_id_sha256'))
    )
    with op.batch_alter_table('registered_images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registered_images_case_id'), ['case_id'], unique=False)

    op.create_table('scan_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scan_id', sa.String(length=36), nullable=False),
    sa.Column('locator_hash', sa.String(length=64), nullable=False),
    sa.Column('locator', sa.Text(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('md5', sa.String(length=32), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=True),
    sa.Column('hashes', sa.JSON(), nullable=True),
    sa.Column('from_thumbnail', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_scan_files_scan_id_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_files')),
    sa.UniqueConstraint('scan_id', 'locator_hash', name=op.f('uq_scan_files_scan_id_locator_hash'))
    )
    op.create_table('scan_matches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scan_id', sa.String(length=36), nullable=False),
    sa.Column('locator_hash', sa.String(length=64), nullable=False),
    sa.Column('image_id', sa.BigInteger(), nullable=False),
    sa.Column('case_ref', sa.String(length=64), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('distance', sa.Integer(), nullable=False),
    sa.Column('distances', sa.JSON(), nullable=False),
    sa.Column('variant', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_scan_matches_scan_id_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_matches')),
    sa.UniqueConstraint('scan_id', 'locator_hash', 'image_id', name=op.f('uq_scan_matches_scan_id_locator_hash_image_id'))
    )
    with op.batch_alter_table('scan_matches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scan_matches_scan_id'), ['scan_id'], unique=False)

    op.create_table('scan_problems',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scan_id', sa.String(length=36), nullable=False),
    sa.Column('locator_hash', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('skipped', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_scan_problems_scan_id_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_problems')),
    sa.UniqueConstraint('scan_id', 'locator_hash', 'stage', name=op.f('uq_scan_problems_scan_id_locator_hash_stage'))
    )
    with op.batch_alter_table('scan_problems', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scan_problems_scan_id'), ['scan_id'], unique=False)

    op.create_table('bank_hashes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('image_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('variant', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=64), nullable=False),
    sa.Column('quality', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['image_id'], ['registered_images.id'], name=op.f('fk_bank_hashes_image_id_registered_images')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bank_hashes')),
    sa.UniqueConstraint('image_id', 'algorithm', 'variant', name=op.f('uq_bank_hashes_image_id_algorithm_variant'))
    )
    with op.batch_alter_table('bank_hashes', schema=None) as batch_op:
        batch_op.create_index('ix_bank_hashes_algorithm_value', ['algorithm', 'value'], unique=False)



def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('bank_hashes', schema=None) as batch_op:
        batch_op.drop_index('ix_bank_hashes_algorithm_value')

    op.drop_table('bank_hashes')
    with op.batch_alter_table('scan_problems', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scan_problems_scan_id'))

    op.drop_table('scan_problems')
    with op.batch_alter_table('scan_matches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scan_matches_scan_id'))

    op.drop_table('scan_matches')
    op.drop_table('scan_files')
    with op.batch_alter_table('registered_images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registered_images_case_id'))

    op.drop_table('registered_images')
    op.drop_table('scans')
    op.drop_table('cases')
    with op.batch_alter_table('bank_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bank_changes_hash_id'))

    op.drop_table('bank_changes')
