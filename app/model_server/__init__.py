"""The model runtime as an OpenAI-compatible HTTP server (``radcheck model serve``)."""

from __future__ import annotations

from app.model_server.server import create_model_server

__all__ = ["create_model_server"]
