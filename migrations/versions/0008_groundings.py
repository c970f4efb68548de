"""groundings: boxes and relevance maps of a check

Revision ID: 0008
Revises: 0002
Create Date: 2026-12-02 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "groundings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("check_job_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("boxes", sa.JSON(), nullable=False),
        sa.Column("statistics", sa.JSON(), nullable=False),
        sa.Column("side", sa.JSON(), nullable=True),
        sa.Column("film_width", sa.Integer(), nullable=True),
        sa.Column("film_height", sa.Integer(), nullable=True),
        sa.Column("map_png", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["check_job_id"],
            ["check_jobs.id"],
            name=op.f("fk_groundings_check_job_id_check_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_groundings_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groundings")),
        sa.UniqueConstraint("check_job_id", "position", name="uq_groundings_job_position"),
    )
    with op.batch_alter_table("groundings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_groundings_check_job_id"), ["check_job_id"])
        batch_op.create_index(batch_op.f("ix_groundings_study_id"), ["study_id"])


def downgrade() -> None:
    with op.batch_alter_table("groundings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_groundings_study_id"))
        batch_op.drop_index(batch_op.f("ix_groundings_check_job_id"))
    op.drop_table("groundings")
