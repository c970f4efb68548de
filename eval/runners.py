"""Runners: the checker in process or a RadCheck API over HTTP, with a resumable cache.

The cache is ``cache.jsonl`` in the output folder: one line per checked row, keyed by the SHA-256
of the row's checker input and of the runner configuration. A rerun (after a crash, Ctrl-C or with
more rows) only checks rows whose key is not there yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from tqdm import tqdm

from eval.checker import check_row, default_checker, describe_checker
from eval.errors import RunnerError
from eval.predictions import Prediction
from eval.records import JSONDict, LabelledRow, canonical_json, sha256_json
from medvlm.checking import Checker

logger = logging.getLogger(__name__)

CHECK_REPORT_PATH = "/api/v1/check-report"
CACHE_FILE = "cache.jsonl"


class Runner(Protocol):
    """Something that checks one row and returns ``CheckResult.to_dict()``."""

    def describe(self) -> JSONDict:
        """The configuration that determines its answers (hashed into the cache key)."""
        ...

    def check(self, row: LabelledRow) -> JSONDict: ...


class InProcessRunner:
    """Calls medvlm's checker directly (``checker`` defaults to ``Checker(runtime=None)``).

    ``label`` names the model runtime behind the checker (``"rules"`` without one); it goes into
    the cache key with the ruleset, knowledge base and checker configuration.
    """

    def __init__(self, checker: Checker | None = None, *, label: str = "rules") -> None:
        self._checker = checker if checker is not None else default_checker()
        self._label = label

    def describe(self) -> JSONDict:
        return {
            "runner": "in_process",
            "checker": self._label,
            **describe_checker(self._checker),
        }

    def check(self, row: LabelledRow) -> JSONDict:
        return check_row(self._checker, row)


class HttpRunner:
    """POSTs each row to ``{base_url}/api/v1/check-report`` with the ``X-API-Key`` header.

    Pass ``client`` to reuse a configured ``httpx.Client`` (tests pass a FastAPI ``TestClient``).
    Connection errors and 5xx answers are retried ``retries`` times, then raise `RunnerError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 60.0,
        retries: int = 2,
        label: str = "rules",
    ) -> None:
        if not api_key:
            raise RunnerError(
                "the HTTP runner needs an API key; pass --api-key or RADCHECK_API_KEY"
            )
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._client = client if client is not None else httpx.Client(timeout=timeout_s)
        self._retries = retries
        self._label = label

    def describe(self) -> JSONDict:
        return {"runner": "http", "url": self._base_url, "checker": self._label}

    def check(self, row: LabelledRow) -> JSONDict:
        url = f"{self._base_url}{CHECK_REPORT_PATH}"
        last: str = ""
        for attempt in range(self._retries + 1):
            try:
                response = self._client.post(
                    url, json=row.request(), headers={"X-API-Key": self._api_key}
                )
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in (401, 403):
                    raise RunnerError(
                        f"{url} refused the API key (HTTP {response.status_code}); "
                        "pass a valid key with --api-key"
                    )
                if response.status_code < 500:
                    if response.status_code != 200:
                        raise RunnerError(
                            f"{url} answered HTTP {response.status_code} for row {row.id}: "
                            f"{response.text[:300]}"
                        )
                    body = response.json()
                    if not isinstance(body, dict):
                        raise RunnerError(f"{url} answered a non-object JSON body for row {row.id}")
                    return body
                last = f"HTTP {response.status_code}"
            if attempt < self._retries:
                time.sleep(0.5 * (attempt + 1))
        raise RunnerError(
            f"could not check row {row.id} at {url} after {self._retries + 1} tries ({last}); "
            "is the RadCheck API running at that address?"
        )

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True, slots=True)
class RunStats:
    """How many rows were checked now and how many came from the cache."""

    computed: int
    cached: int
    seconds: float


def config_hash(runner: Runner) -> str:
    """SHA-256 of the runner description."""
    return sha256_json(runner.describe())


def _load_cache(path: Path) -> dict[str, JSONDict]:
    cache: dict[str, JSONDict] = {}
    if not path.is_file():
        return cache
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                entry = json.loads(line)
                cache[str(entry["key"])] = entry["result"]
            except (json.JSONDecodeError, KeyError, TypeError):
                # an interrupted run can leave a partial last line: that row is checked again
                logger.warning("ignoring unreadable cache line %d of %s", number, path)
    return cache


def run_rows(
    rows: Iterable[LabelledRow],
    runner: Runner,
    out_dir: Path,
    *,
    progress: bool = True,
    on_result: Callable[[LabelledRow, Mapping[str, Any]], None] | None = None,
) -> tuple[list[Prediction], RunStats]:
    """Check every row (cached rows are skipped) and return predictions in row order."""
    rows = list(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = out_dir / CACHE_FILE
    cache = _load_cache(cache_path)
    chash = config_hash(runner)
    predictions: list[Prediction] = []
    computed = cached = 0
    started = time.perf_counter()
    with (
        cache_path.open("a", encoding="utf-8") as cache_file,
        tqdm(total=len(rows), desc="checking", unit="report", disable=not progress) as bar,
    ):
        for row in rows:
            key = sha256_json([row.input_hash(), chash])
            result = cache.get(key)
            if result is None:
                result = runner.check(row)
                cache[key] = result
                cache_file.write(canonical_json({"id": row.id, "key": key, "result": result}))
                cache_file.write("\n")
                cache_file.flush()
                computed += 1
            else:
                cached += 1
            if on_result is not None:
                on_result(row, result)
            predictions.append(Prediction.from_check_result(row.id, result))
            bar.update(1)
    stats = RunStats(computed, cached, time.perf_counter() - started)
    logger.info("checked %d rows, %d from cache, %.1f s", computed, cached, stats.seconds)
    return predictions, stats
