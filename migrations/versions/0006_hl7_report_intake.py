"""HL7 report intake: result status per report version, received ORU^R01 messages

Revision ID: 0006
Revises: 0008
Create Date: 2026-12-02 17:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0006"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_status", sa.String(length=1), nullable=True))
    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("control_id", sa.String(length=199), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("hl7_version", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("result_status", sa.String(length=1), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("patient_ids", sa.JSON(), nullable=True),
        sa.Column("report_text", sa.Text(), nullable=True),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("report_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_hl7_messages_report_id_reports"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_hl7_messages_study_id_studies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_messages")),
        sa.UniqueConstraint("sender", "control_id", name="uq_hl7_messages_sender_control_id"),
    )
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hl7_messages_accession_number"), ["accession_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_hl7_messages_state"), ["state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_hl7_messages_study_instance_uid"), ["study_instance_uid"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_hl7_messages_study_id"), ["study_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hl7_messages_study_id"))
        batch_op.drop_index(batch_op.f("ix_hl7_messages_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_hl7_messages_state"))
        batch_op.drop_index(batch_op.f("ix_hl7_messages_accession_number"))
    op.drop_table("hl7_messages")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_column("result_status")
