"""The DICOM fuzz corpus at the HTTP doors: seeded byte-wise mutations of real files sent to the
upload route and to STOW-RS. Never a 5xx; every refusal is in the one error shape (upload) or a
FailedSOPSequence entry with a standard reason (STOW-RS); nothing is left on disk that no row
references (issue 13.4)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset
from sqlalchemy import select

from app.db.models import Instance
from app.db.session import Database
from app.settings import Settings
from tests.app.conftest import auth
from tests.dicom_io.test_fuzz import _originals, mutate

API = "/api/v1"
CASES = 60
BOUNDARY = "fuzz-boundary-5c0f"
STOW_REASONS = {0xA700, 0xA900, 0xC000, 0xC122, 0x0110, 0x0111}


def mutants(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    originals = _originals()
    return [mutate(rng.choice(originals), rng) for _ in range(CASES)]


def files_match_rows(settings: Settings) -> None:
    """Every stored file belongs to a row and every row's file exists (no orphans, no loss)."""
    db = Database(settings.database_url)
    with db.session() as session:
        rows = list(session.scalars(select(Instance)))
    db.dispose()
    on_disk = {p.resolve() for p in Path(settings.files_dir).rglob("*") if p.is_file()}
    referenced = {(Path(settings.files_dir) / r.storage_path).resolve() for r in rows}
    assert on_disk == referenced


@pytest.mark.slow
def test_mutated_files_at_the_upload_route(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    statuses: dict[int, int] = {}
    for i, data in enumerate(mutants(seed=13)):
        r = client.post(
            f"{API}/instances",
            files=[("files", (f"m{i}.dcm", data, "application/dicom"))],
            headers=auth(keys["integration"]),
        )
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (i, r.text[:300])
        if r.status_code >= 400:
            body = r.json()
            assert set(body) >= {"type", "detail", "request_id"}, body
            assert body["request_id"] == r.headers["X-Request-ID"]
    assert sum(v for k, v in statuses.items() if k >= 400) > 0  # the corpus does hit refusals
    files_match_rows(settings)


@pytest.mark.slow
def test_mutated_files_at_stow_rs(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    cases = mutants(seed=31)
    for start in range(0, len(cases), 6):  # six parts per request: good and bad parts mixed
        body = b""
        for data in cases[start : start + 6]:
            body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            body += b"\r\n"
        body += f"--{BOUNDARY}--\r\n".encode()
        r = client.post(
            "/dicomweb/studies",
            content=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                **auth(keys["integration"]),
            },
        )
        assert r.status_code in (200, 202, 409), (start, r.status_code, r.text[:300])
        answer = Dataset.from_json(r.json())
        failed = list(getattr(answer, "FailedSOPSequence", []))
        referenced = list(getattr(answer, "ReferencedSOPSequence", []))
        assert len(failed) + len(referenced) == len(cases[start : start + 6])
        assert {f.FailureReason for f in failed} <= STOW_REASONS
    files_match_rows(settings)
