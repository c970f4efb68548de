"""audit hash chain

Revision ID: 0009
Revises: 0003
Create Date: 2026-12-02 17:40:00

Each audit row gets its chain position (seq), the previous row's hash and its own hash; the
single-row audit_chain table holds the head. Existing rows are chained in id order.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.audit_chain import GENESIS, row_digest

revision: str = '0009'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUARDS_OFF = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_events_no_update",
        "DROP TRIGGER IF EXISTS audit_events_no_delete",
    ],
    "postgresql": ["ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change"],
}
GUARDS_ON = {
    "sqlite": [
        "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    ],
    "postgresql": ["ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_change"],
}


def upgrade() -> None:
    op.create_table(
        'audit_chain',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('last_hash', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain')),
    )
    op.add_column('audit_events', sa.Column('seq', sa.BigInteger(), nullable=True))
    op.add_column('audit_events', sa.Column('prev_hash', sa.String(length=64), nullable=True))
    op.add_column('audit_events', sa.Column('row_hash', sa.String(length=64), nullable=True))
    op.create_index(op.f('ix_audit_events_seq'), 'audit_events', ['seq'], unique=True)

    bind = op.get_bind()
    dialect = bind.dialect.name
    events = sa.table(
        'audit_events', *(sa.column(c) for c in (
            'id', 'at', 'actor', 'action', 'study_id', 'object_type', 'object_id', 'details',
            'seq', 'prev_hash', 'row_hash',
        ))
    )
    events.c.details.type = sa.JSON()
    events.c.at.type = sa.DateTime(timezone=True)
    for statement in GUARDS_OFF.get(dialect, []):
        op.execute(statement)
    prev, seq = GENESIS, 0
    rows = bind.execute(sa.select(events).order_by(events.c.id)).mappings().all()
    for row in rows:
        seq += 1
        digest = row_digest(
            prev, seq=seq, at=row['at'], actor=row['actor'], action=row['action'],
            study_id=row['study_id'], object_type=row['object_type'],
            object_id=row['object_id'], details=row['details'],
        )
        bind.execute(
            events.update().where(events.c.id == row['id']).values(
                seq=seq, prev_hash=prev, row_hash=digest
            )
        )
        prev = digest
    for statement in GUARDS_ON.get(dialect, []):
        op.execute(statement)
    bind.execute(
        sa.text("INSERT INTO audit_chain (id, seq, last_hash) VALUES (1, :seq, :h)"),
        {"seq": seq, "h": prev},
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_audit_events_seq'), table_name='audit_events')
    with op.batch_alter_table('audit_events', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('row_hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('seq')
    op.drop_table('audit_chain')
