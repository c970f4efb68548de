"""Longer schema-driven fuzz run of the HTTP API (schemathesis) on loopback; writes JSON.

Every operation of the OpenAPI document gets --examples valid and --examples invalid generated
requests (admin key, so every handler is reached), and --upload-files mutated real DICOM files
(the dicom_io fuzz corpus) are posted to the upload path. Zero 5xx and every error in the one
error shape is the target. CI runs the same code with a few examples (tests/app/test_fuzz_api.py).

    PYTHONPATH=. python bench/fuzz_api.py --examples 200 --out bench/results/fuzz_api.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_api_key
from tests.app.api_fuzz import fuzz_operations, fuzz_upload, serve
from tests.app.conftest import make_settings
from tests.dicom_io.test_fuzz import _originals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="per operation and mode")
    parser.add_argument("--upload-files", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fuzz_api.json"))
    args = parser.parse_args()
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp) / "data", args.database_url)
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        with db.session() as session:
            _, key = create_api_key(session, name="fuzz", role="admin")
        db.dispose()
        started = time.perf_counter()
        with serve(settings) as url:
            ops = fuzz_operations(
                url, {"X-API-Key": key}, max_examples=args.examples, seed=args.seed
            )
            upload = fuzz_upload(
                url, {"X-API-Key": key}, _originals(), files=args.upload_files, seed=args.seed
            )
        elapsed = time.perf_counter() - started
    result = {
        "bench": "fuzz_api",
        "machine": platform.platform(),
        "examples_per_operation_and_mode": args.examples,
        "seconds": round(elapsed, 1),
        "operations": ops.as_dict(),
        "upload": upload.as_dict(),
        "total_examples": ops.examples + upload.examples,
        "server_errors": ops.server_errors + upload.server_errors,
        "bad_error_shapes": ops.bad_error_shapes + upload.bad_error_shapes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("total_examples", "server_errors", "bad_error_shapes", "seconds")
            }
        )
    )


if __name__ == "__main__":
    main()
