"""Several API processes on one port (``radcheck serve --processes N``).

One Python process answers reads on one core: its global interpreter lock serialises the routes'
Python work, so past about half a core's load its queue, not the database, sets the latency. With
``--processes N`` uvicorn's supervisor binds the port once and starts N processes that share it
(each its own database pool, read-audit buffer and connection limits), restarting one that dies.
The check worker then runs as its own process (``radcheck worker``) rather than inside each of
them: the queue's leases already make any number of workers safe, but one model per API process
would not fit on the GPU.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import TYPE_CHECKING, ClassVar

from app.api.connections import ConnectionLimits, GuardedHttpProtocol
from app.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["SharedPortProtocol", "api_process", "connection_limits", "worker_command"]


def connection_limits(settings: Settings) -> ConnectionLimits:
    api = settings.api
    return ConnectionLimits(
        header_timeout_s=api.header_timeout_s,
        read_timeout_s=api.read_timeout_s,
        max_connections_per_peer=api.max_connections_per_peer,
    )


class SharedPortProtocol(GuardedHttpProtocol):
    """The HTTP protocol of each API process; ``api_process`` sets its limits from the settings
    before the first connection. Peers are counted per process."""

    open_per_peer: ClassVar[Counter[str]] = Counter()
    warned_at: ClassVar[dict[str, float]] = {}


def api_process() -> FastAPI:
    """uvicorn's application factory in each API process: the settings from the environment (as
    the parent read them), no in-process check worker."""
    from app.api import create_app
    from app.cli.main import settings_or_exit

    settings = settings_or_exit()
    SharedPortProtocol.limits = connection_limits(settings)
    return create_app(settings, run_worker=False)


def worker_command() -> list[str]:
    return [sys.executable, "-m", "app.cli", "worker"]
