"""API keys: created once, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Role, utcnow
from app.services.errors import ConflictError, InvalidInputError

__all__ = [
    "CredentialResolver",
    "Principal",
    "authenticate",
    "create_api_key",
    "credential_is_well_formed",
    "list_api_keys",
    "revoke_api_key",
]

KEY_PREFIX = "rck_"

LAST_USED_RESOLUTION = timedelta(seconds=60)
"""``last_used_at`` is refreshed at most this often (it is a hint, not an audit record)."""

_WELL_FORMED = re.compile(r"^[A-Za-z0-9._~+/=-]{8,512}$")


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


CredentialResolver = Callable[[Session, str], "Principal | None"]
"""Maps a presented credential to its principal, or None when unknown, expired or revoked.

There is no cache in front of resolvers: each request costs one indexed lookup, so revoking a
credential (setting its ``revoked_at``) takes effect on the very next request in every process.
API keys are resolved by :func:`authenticate`; other credential kinds (dashboard sessions) add
their own resolver to ``app.state.credential_resolvers`` (see docs/security.md).
"""


def credential_is_well_formed(token: str) -> bool:
    """Tokens are URL-safe base64 (8-512 characters); anything else is refused before any lookup."""
    return _WELL_FORMED.fullmatch(token) is not None


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
    """The principal for a presented key, or None if unknown or revoked; records last use.

    One indexed lookup (by the key's hash); ``last_used_at`` is written at most once a minute.
    """
    if not key.startswith(KEY_PREFIX):
        return None
    row = session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.last_used_at).where(
            ApiKey.key_hash == _hash(key), ApiKey.revoked_at.is_(None)
        )
    ).one_or_none()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
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
