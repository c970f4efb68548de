"""Bounded schema-driven fuzzing in CI (a few examples per route; bench/fuzz_api.py runs many).

The admin key passes every role check, so generated input reaches every handler; the role checks
themselves are covered by test_role_matrix.py.
"""

from __future__ import annotations

from app.db.session import Database
from app.services.auth import create_api_key
from app.settings import Settings
from tests.app.api_fuzz import fuzz_operations, fuzz_upload, serve
from tests.dicom_io.test_fuzz import _originals

EXAMPLES_PER_MODE = 10


def test_generated_requests_never_get_a_5xx_and_errors_keep_one_shape(
    sqlite_settings: Settings,
) -> None:
    db = Database(sqlite_settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="fuzz", role="admin")
    db.dispose()
    with serve(sqlite_settings) as url:
        stats = fuzz_operations(url, {"X-API-Key": key}, max_examples=EXAMPLES_PER_MODE)
        upload = fuzz_upload(url, {"X-API-Key": key}, _originals(), files=40, seed=13)
    assert stats.server_errors == 0 and stats.bad_error_shapes == 0, stats.failures
    assert upload.server_errors == 0 and upload.bad_error_shapes == 0, upload.failures
    assert upload.examples == 10
    assert len(stats.per_operation) >= 11  # every operation was exercised
    assert any(s in (400, 404, 422) for s in stats.statuses)  # invalid input was really invalid
    assert any(s < 300 for s in stats.statuses)  # and valid input got through
