"""``Database.reader``: reads outside a transaction, and no ORM write through it (an audit row
written without a transaction could break the hash chain); writers keep their transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.db.models import ApiKey, AuditEvent
from app.db.session import Database, ReadSessionWriteError
from app.services.audit import record
from app.services.audit_trail import verify_chain
from app.settings import Settings


def test_a_reader_reads_and_refuses_orm_writes(settings: Settings) -> None:
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            record(session, actor="test", action="user.authenticated")
        with db.reader() as session:
            assert session.scalar(select(func.count(AuditEvent.id))) == 1
        with pytest.raises(ReadSessionWriteError, match=r"Database\.run"), db.reader() as session:
            record(session, actor="test", action="study.read")
        with pytest.raises(ReadSessionWriteError), db.reader() as session:
            session.add(ApiKey(name="k", key_hash="h" * 64, role="admin"))
        with db.reader() as session:
            assert session.scalar(select(func.count(AuditEvent.id))) == 1
            assert session.scalar(select(func.count(ApiKey.id))) == 0
            assert verify_chain(session).intact
    finally:
        db.dispose()
