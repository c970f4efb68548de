"""app/services/ingest.py: a file put in place for a new row goes when its transaction does not
commit (issue 13: no file without a row)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db.models import Instance
from app.db.session import Database
from app.services.ingest import ingest_instance
from app.services.storage import ContentStore
from app.settings import Settings
from tests.app.conftest import limits_of


def files_in(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_rolled_back_ingest_removes_its_file_but_a_savepoint_does_not(
    settings: Settings, rg1_path: Path
) -> None:
    db = Database(settings.database_url)
    store = ContentStore(settings.files_dir)
    data = rg1_path.read_bytes()
    # immediate: as every writer of the app (SQLite's savepoints need the explicit BEGIN)
    with (
        pytest.raises(RuntimeError, match="commit never came"),
        db.session(immediate=True) as session,
    ):
        ingest_instance(session, store, data, actor="t", limits=limits_of(settings))
        assert len(files_in(settings.files_dir)) == 1  # in place before the commit ...
        raise RuntimeError("the commit never came")  # ... e.g. SQLite found its disk full
    assert files_in(settings.files_dir) == []
    with db.session(immediate=True) as session:
        ingest_instance(session, store, data, actor="t", limits=limits_of(settings))
        with pytest.raises(RuntimeError), session.begin_nested():
            raise RuntimeError("a later savepoint of the same transaction fails")
    with db.session() as session:
        rows = session.scalars(select(Instance)).all()
        assert session.scalar(select(func.count(Instance.id))) == 1
    assert [p.relative_to(settings.files_dir).as_posix() for p in files_in(settings.files_dir)] == [
        rows[0].storage_path
    ]
    db.dispose()
