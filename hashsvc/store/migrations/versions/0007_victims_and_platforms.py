"""victims and platforms: case secrets, consent and lockout; bank-sync grants; platform
matches, takedown feedback and the deletion reports issued per case

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('secret_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('features_consent', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('secret_failures', sa.Integer(), nullable=False,
                                      server_default=sa.text('0')))
        batch_op.add_column(sa.Column('locked_until', sa.DateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('orgs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bank_sync', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.create_table(
        'platform_matches',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('org_id', BIG_ID, nullable=False),
        sa.Column('case_id', BIG_ID, nullable=False),
        sa.Column('image_id', sa.BigInteger(), nullable=False),
        sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['orgs.id'],
                                name=op.f('fk_platform_matches_org_id_orgs')),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'],
                                name=op.f('fk_platform_matches_case_id_cases')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_platform_matches')),
        sa.UniqueConstraint('org_id', 'image_id',
                            name=op.f('uq_platform_matches_org_id_image_id')),
    )
    op.create_index(op.f('ix_platform_matches_case_id'), 'platform_matches', ['case_id'],
                    unique=False)
    op.create_table(
        'takedown_feedback',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('org_id', BIG_ID, nullable=False),
        sa.Column('key_id', BIG_ID, nullable=True),
        sa.Column('case_id', BIG_ID, nullable=False),
        sa.Column('image_id', sa.BigInteger(), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['org_id'], ['orgs.id'],
                                name=op.f('fk_takedown_feedback_org_id_orgs')),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'],
                                name=op.f('fk_takedown_feedback_case_id_cases')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_takedown_feedback')),
    )
    op.create_index(op.f('ix_takedown_feedback_case_id'), 'takedown_feedback', ['case_id'],
                    unique=False)
    op.create_table(
        'issued_reports',
        sa.Column('report_id', sa.String(length=64), nullable=False),
        sa.Column('case_id', BIG_ID, nullable=False),
        sa.Column('scan_id', sa.String(length=36), nullable=False),
        sa.Column('document_sha256', sa.String(length=64), nullable=False),
        sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'],
                                name=op.f('fk_issued_reports_case_id_cases')),
        sa.PrimaryKeyConstraint('report_id', 'case_id', name=op.f('pk_issued_reports')),
    )
    op.create_index(op.f('ix_issued_reports_case_id'), 'issued_reports', ['case_id'],
                    unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f('ix_issued_reports_case_id'), table_name='issued_reports')
    op.drop_table('issued_reports')
    op.drop_index(op.f('ix_takedown_feedback_case_id'), table_name='takedown_feedback')
    op.drop_table('takedown_feedback')
    op.drop_index(op.f('ix_platform_matches_case_id'), table_name='platform_matches')
    op.drop_table('platform_matches')
    with op.batch_alter_table('orgs', schema=None) as batch_op:
        batch_op.drop_column('bank_sync')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('locked_until')
        batch_op.drop_column('secret_failures')
        batch_op.drop_column('features_consent')
        batch_op.drop_column('secret_hash')
