"""The HTTP API (FastAPI). ``create_app`` is the only way to build it."""

from __future__ import annotations

from app.api.main import create_app

__all__ = ["create_app"]
