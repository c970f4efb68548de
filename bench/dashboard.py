"""Dashboard benchmark: worklist API p95 with 10,000 studies / 30,000 flags (SQLite, PostgreSQL),
the worklist page's time to first useful paint in Chromium, and the image route for RG1 (cold and
cached) against pydicom + Pillow by hand.

    python bench/dashboard.py --out bench/results/dashboard.json [--studies 10000] [--no-browser]

Targets (issue 10): API p95 <= 150 ms, page <= 1.5 s, image cold <= 300 ms, cached <= 30 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PASSWORD = "correct horse battery"  # noqa: S105 - a throw-away bench account
SUBTYPES = ["laterality", "negation", "severity", "measurement", "interval", "sex", "view"]
SEVERITIES = ["critical", "warning", "info"]


def summarise(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[max(0, round(0.95 * len(ms)) - 1)], 2),
        "max_ms": round(ms[-1], 2),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(url: str, studies: int, flags_per_study: float) -> None:
    """Studies, a report, a succeeded check and ~3 flags each, a third of them reviewed (bulk)."""
    import sqlalchemy as sa

    from app.db.models import CheckJob, Flag, Report, Review, Study

    rng = random.Random(0)
    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    total_flags = int(studies * flags_per_study)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Study),
            [
                {
                    "id": i,
                    "study_instance_uid": f"1.2.826.0.1.3680043.10.{i}",
                    "accession_number": f"ACC{i:06d}",
                    "study_date": f"2026{(i % 12) + 1:02d}{(i % 28) + 1:02d}",
                    "status": "checked",
                    "last_instance_at": now,
                    "created_at": now - timedelta(minutes=i),
                    "updated_at": now,
                }
                for i in range(1, studies + 1)
            ],
        )
        conn.execute(
            sa.insert(Report),
            [
                {
                    "id": i,
                    "study_id": i,
                    "version": 1,
                    "findings": "x",
                    "impression": "y",
                    "created_at": now,
                }
                for i in range(1, studies + 1)
            ],
        )
        conn.execute(
            sa.insert(CheckJob),
            [
                {
                    "id": i,
                    "study_id": i,
                    "report_id": i,
                    "status": "succeeded",
                    "attempts": 1,
                    "max_attempts": 3,
                    "stage_timings_ms": {},
                    "provenance": {},
                    "selection": {},
                    "created_at": now,
                }
                for i in range(1, studies + 1)
            ],
        )
        flags, reviews = [], []
        for n in range(1, total_flags + 1):
            study = rng.randint(1, studies)
            flags.append(
                {
                    "id": n,
                    "check_job_id": study,
                    "study_id": study,
                    "key": f"k{n}",
                    "subtype": rng.choice(SUBTYPES),
                    "complex_class": "substitute",
                    "severity": rng.choice(SEVERITIES),
                    "source": "text_rule",
                    "rule_id": f"text.rule.{rng.randint(1, 12)}",
                    "message": "m",
                    "section": "findings",
                    "sentence_index": 0,
                    "span_start": 0,
                    "span_end": 1,
                    "confidence": 0.8,
                    "evidence": {},
                    "created_at": now,
                }
            )
            if n % 3 == 0:
                reviews.append(
                    {
                        "flag_id": n,
                        "decision": "dismissed",
                        "reviewer": "user:bench",
                        "created_at": now,
                    }
                )
        for start in range(0, len(flags), 5000):
            conn.execute(sa.insert(Flag), flags[start : start + 5000])
        conn.execute(sa.insert(Review), reviews)
    engine.dispose()


def bench_worklist(url: str, data_dir: Path, studies: int, requests: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from app.api import create_app
    from app.db.migrate import upgrade
    from app.db.session import Database
    from app.services.users import create_user
    from app.services.worklist import rebuild_worklist
    from app.settings import Settings

    settings = Settings.model_validate(
        {"storage": {"data_dir": data_dir}, "database": {"url": url}}
    )
    upgrade(settings.database_url)
    t = time.perf_counter()
    seed(settings.database_url, studies, 3.0)
    seeded_s = time.perf_counter() - t
    db = Database(settings.database_url)
    with db.session() as s:  # the bulk load bypassed the services that keep the worklist rows
        rebuild_worklist(s)
    with db.session() as s:
        create_user(s, username="bench", name="Bench", role="radiologist", password=PASSWORD)
    db.dispose()
    out: dict[str, Any] = {"studies": studies, "flags": studies * 3, "seed_s": round(seeded_s, 1)}
    with TestClient(create_app(settings, run_worker=False)) as c:
        token = c.post(
            "/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        cases = {
            "default": {},
            "unreviewed_critical": {"review": "unreviewed", "severity": "critical"},
            "subtype_page5": {"subtype": "laterality", "offset": "100"},
            "accession": {"accession_number": "ACC004242"},
        }
        for name, params in cases.items():
            for _ in range(3):  # warm-up
                c.get("/api/v1/worklist", params=params, headers=headers)
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                r = c.get("/api/v1/worklist", params=params, headers=headers)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.text
            out[name] = summarise(times)
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            c.get("/api/v1/worklist/next", headers=headers)
            times.append((time.perf_counter() - t) * 1000)
        out["next"] = summarise(times)
    return out


def bench_page(url: str, data_dir: Path, browser: str) -> dict[str, Any]:
    """Worklist page in Chromium on the seeded database: login to the first row, and refreshes."""
    import uvicorn
    from playwright.sync_api import expect, sync_playwright

    from app.api import create_app
    from app.cli.ui import start_dashboard
    from app.settings import Settings

    settings = Settings.model_validate(
        {"storage": {"data_dir": data_dir}, "database": {"url": url}}
    )
    api_port, ui_port = free_port(), free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, run_worker=False),
            host="127.0.0.1",
            port=api_port,
            log_level="error",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    ui = start_dashboard("127.0.0.1", ui_port, f"http://127.0.0.1:{api_port}/api/v1")
    out: dict[str, Any] = {}
    try:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        with sync_playwright() as pw:
            b = pw.chromium.launch(
                executable_path=browser,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = b.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{ui_port}")
            page.get_by_label("Username", exact=True).fill("bench")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            t = time.perf_counter()
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("open · critical").first).to_be_visible(timeout=60_000)
            out["login_to_worklist_ms"] = round((time.perf_counter() - t) * 1000, 1)
            times = []
            for i in range(8):
                # A filter change: the page reruns, calls the API and redraws the list.
                page.get_by_label("Accession").fill(f"ACC00{1000 + i}")
                t = time.perf_counter()
                page.get_by_label("Accession").press("Enter")
                expect(page.get_by_text(f"ACC00{1000 + i} ·").first).to_be_visible(timeout=60_000)
                times.append((time.perf_counter() - t) * 1000)
            out["filter_to_rows"] = summarise(times)
            b.close()
    finally:
        ui.terminate()
        ui.wait(timeout=20)
        server.should_exit = True
        thread.join(timeout=20)
    return out


def bench_image(requests: int) -> dict[str, Any]:
    import numpy as np
    import pydicom
    from fastapi.testclient import TestClient
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from app.api import create_app
    from app.db.migrate import upgrade
    from app.db.session import Database
    from app.services.auth import create_api_key
    from app.services.images import RenderCache
    from app.settings import Settings

    rg1 = Path(str(get_testdata_file("RG1_UNCR.dcm", download=False)))
    out: dict[str, Any] = {
        "image": "RG1_UNCR.dcm 1841x1955 12-bit MONOCHROME1",
        "size": 1024,
        "format": "png",
    }
    # Reference: pydicom + Pillow by hand (decode, modality + VOI LUT, invert, resize, PNG).
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        ds = pydicom.dcmread(rg1)
        arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        disp = ((arr - lo) / max(hi - lo, 1) * 255).astype(np.uint8)
        disp = 255 - disp  # MONOCHROME1
        img = Image.fromarray(disp)
        img.thumbnail((1024, 1024), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        times.append((time.perf_counter() - t) * 1000)
    out["reference_pydicom_pillow"] = summarise(times)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.model_validate({"storage": {"data_dir": Path(tmp)}})
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        with db.session() as s:
            _, key = create_api_key(s, name="bench", role="integration")
        db.dispose()
        app = create_app(settings, run_worker=False)
        with TestClient(app) as c:
            h = {"X-API-Key": key}
            sop = c.post(
                "/api/v1/instances",
                files=[("files", ("rg1.dcm", rg1.read_bytes(), "application/dicom"))],
                headers=h,
            ).json()["accepted"][0]["sop_instance_uid"]
            url = f"/api/v1/instances/{sop}/rendered"
            cold = []
            for _ in range(requests):
                app.state.render_cache = RenderCache()
                t = time.perf_counter()
                r = c.get(url, headers=h)
                cold.append((time.perf_counter() - t) * 1000)
                assert r.headers["X-Render-Cache"] == "miss"
            cached = []
            for _ in range(requests * 3):
                t = time.perf_counter()
                r = c.get(url, headers=h)
                cached.append((time.perf_counter() - t) * 1000)
                assert r.headers["X-Render-Cache"] == "hit"
            out["route_cold"] = summarise(cold)
            out["route_cached"] = summarise(cached)
            out["png_bytes"] = len(r.content)
    return out


def create_pg() -> tuple[str, str]:
    import sqlalchemy as sa

    name = f"radcheck_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name, sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(False)


def drop_pg(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=Path("bench/results/dashboard.json"))
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any] = {
        "benchmark": "dashboard",
        "at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "targets": {
            "worklist_p95_ms": 150,
            "page_s": 1.5,
            "image_cold_ms": 300,
            "image_cached_ms": 30,
        },
        "worklist": {},
    }
    result["image"] = bench_image(args.requests // 3 or 5)
    print(json.dumps(result["image"], indent=1), flush=True)
    for backend in args.backend or ["sqlite", "postgresql"]:
        with tempfile.TemporaryDirectory() as tmp:
            pg_name = None
            if backend == "postgresql":
                pg_name, url = create_pg()
            else:
                url = f"sqlite:///{Path(tmp) / 'radcheck.db'}"
            try:
                result["worklist"][backend] = bench_worklist(
                    url, Path(tmp), args.studies, args.requests
                )
                print(backend, json.dumps(result["worklist"][backend]), flush=True)
                if backend == "sqlite" and not args.no_browser and Path(args.chromium).exists():
                    result["page_chromium_sqlite"] = bench_page(url, Path(tmp), args.chromium)
                    print(json.dumps(result["page_chromium_sqlite"]), flush=True)
            finally:
                if pg_name:
                    drop_pg(pg_name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
