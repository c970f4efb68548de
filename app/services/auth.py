"""API keys: created once, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Role, utcnow
from app.services.errors import ConflictError, InvalidInputError

__all__ = [
    "Principal",
    "PrincipalCache",
    "authenticate",
    "create_api_key",
    "list_api_keys",
    "revoke_api_key",
]

KEY_PREFIX = "rck_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and role (never the key itself)."""

    key_id: int
    name: str
    role: Role
    # A person logged in (session token or OIDC ID token) rather than an API key.
    kind: str = "apikey"
    username: str | None = None
    session_id: int | None = None

    @property
    def actor(self) -> str:
        if self.kind != "apikey" and self.username is not None:
            return f"user:{self.username}"
        return f"apikey:{self.name}"


class PrincipalCache:
    """Recently authenticated keys (by hash, never the key), so reads do not hit the database.

    A revoked key keeps working for at most ``ttl_s`` seconds in a running server.
    """

    def __init__(self, ttl_s: float = 30.0, max_entries: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        digest = _hash(key)
        with self._lock:
            hit = self._entries.get(digest)
            if hit is None or hit[0] < time.monotonic():
                self._entries.pop(digest, None)
                return None
            return hit[1]

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[_hash(key)] = (time.monotonic() + self.ttl_s, principal)


def _hash(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is not brute-forceable (unlike passwords).
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, *, name: str, role: str) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext key, which is never stored."""
    try:
        parsed_role = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise InvalidInputError(f"Unknown role {role!r}: use one of {allowed}.") from None
    if not name.strip():
        raise InvalidInputError("An API key needs a non-empty --name (e.g. 'ris-gateway').")
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ConflictError(f"An API key named {name!r} already exists: choose another name.")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name, role=parsed_role.value, prefix=plaintext[:12], key_hash=_hash(plaintext)
    )
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal for a presented key, or None if unknown or revoked; records last use."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(key)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
    return Principal(key_id=row.id, name=row.name, role=Role(row.role))


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_api_key(session: Session, name: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise InvalidInputError(f"No API key named {name!r}: see `radcheck apikey list`.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
