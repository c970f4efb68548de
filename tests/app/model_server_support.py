"""Helpers for the model server tests: the OpenAI-compatible app on loopback, in this process."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from app.model_server import create_model_server
from tests.app.dicomweb_support import free_port


class ModelServerThread:
    """``create_model_server(runtime)`` under uvicorn on a free loopback port, in a thread; the
    context manager gives its base URL."""

    def __init__(self, runtime: Any, api_key: str | None = None) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_model_server(runtime, api_key=api_key),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("model server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
