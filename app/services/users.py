"""People, not keys: user accounts (argon2 password hashes), login sessions, lock-out, OIDC identities.

A session token is a 256-bit random string shown once to the client; only its SHA-256 is stored, and
it is checked against the database on every request, so a logout or a disabled account takes effect
on the next request.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Role, User, UserSession, utcnow
from app.services import audit
from app.services.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = [
    "SESSION_PREFIX",
    "LoginOutcome",
    "LoginPolicy",
    "SessionUser",
    "create_user",
    "disable_user",
    "enable_user",
    "list_users",
    "login",
    "logout",
    "resolve_oidc_user",
    "resolve_session",
]

SESSION_PREFIX = "rcs_"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
MIN_PASSWORD = 10
USER_ROLES = (Role.RADIOLOGIST, Role.ADMIN)

_hasher = PasswordHasher()  # argon2id with the library's current (RFC 9106 low-memory) defaults


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown: a wrong username costs as long as a wrong
    password (no user enumeration by timing)."""
    return _hasher.hash("radcheck-dummy-password")


@dataclass(frozen=True)
class LoginPolicy:
    session_ttl_s: float = 8 * 3600
    idle_timeout_s: float = 30 * 60
    max_failed_logins: int = 5
    lockout_s: float = 15 * 60


@dataclass(frozen=True)
class SessionUser:
    """The user behind a valid session (or an OIDC token)."""

    user_id: int
    username: str
    name: str
    role: Role
    session_id: int | None


@dataclass(frozen=True)
class LoginOutcome:
    """A login attempt; ``token`` is set on success, else ``error`` (and ``locked``) say why."""

    token: str | None = None
    user: SessionUser | None = None
    expires_at: datetime | None = None
    error: str | None = None
    locked: bool = False


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise InvalidInputError(
            f"Username {username!r} is not usable: 2-64 characters, lower-case letters, digits "
            "and . _ @ - (starting with a letter or digit)."
        )
    return username


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInputError(
            f"The password has {len(password)} characters; use at least {MIN_PASSWORD}."
        )


def create_user(
    session: Session,
    *,
    username: str,
    name: str,
    role: str,
    password: str | None,
    oidc_subject: str | None = None,
    actor: str = "cli",
) -> User:
    """Create a radiologist or admin account (a password, an OIDC subject, or both)."""
    _check_username(username)
    try:
        parsed_role = Role(role)
    except ValueError:
        parsed_role = None
    if parsed_role not in USER_ROLES:
        raise InvalidInputError(
            f"Role {role!r} is not a user role: use radiologist or admin "
            "(integrations use API keys: `radcheck apikey create`)."
        )
    assert parsed_role is not None
    if not name.strip():
        raise InvalidInputError("A user needs a non-empty --name (shown in the audit trail).")
    if password is None and oidc_subject is None:
        raise InvalidInputError("Give the user a password or an OIDC subject (--oidc-subject).")
    if password is not None:
        _check_password(password)
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise ConflictError(f"A user named {username!r} already exists: choose another username.")
    user = User(
        username=username,
        name=name.strip(),
        role=parsed_role.value,
        password_hash=_hasher.hash(password) if password is not None else None,
        oidc_subject=oidc_subject,
        failed_logins=0,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.created",
        object_type="user",
        object_id=user.id,
        details={"username": username, "role": parsed_role.value},
    )
    return user


def _get(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError(f"No user named {username!r}: see `radcheck user list`.")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def disable_user(session: Session, username: str, *, actor: str) -> User:
    """Disable an account and end its sessions at once."""
    user = _get(session, username)
    now = utcnow()
    if user.disabled_at is None:
        user.disabled_at = now
    session.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    audit.record(
        session, actor=actor, action="user.disabled", object_type="user", object_id=user.id
    )
    return user


def enable_user(session: Session, username: str, *, actor: str) -> User:
    """Re-enable an account and clear a lock-out."""
    user = _get(session, username)
    user.disabled_at = None
    user.locked_until = None
    user.failed_logins = 0
    audit.record(session, actor=actor, action="user.enabled", object_type="user", object_id=user.id)
    return user


def _session_user(user: User, session_id: int | None) -> SessionUser:
    return SessionUser(
        user_id=user.id,
        username=user.username,
        name=user.name,
        role=Role(user.role),
        session_id=session_id,
    )


def login(
    session: Session, *, username: str, password: str, policy: LoginPolicy, client: str = "-"
) -> LoginOutcome:
    """Check a password; on success open a session. Failures and lock-outs are audited.

    The caller commits whatever the outcome, so failed attempts count even though the request fails.
    """
    now = utcnow()
    user = session.scalar(select(User).where(User.username == username))
    refused = "Wrong username or password (or the account is disabled): try again."
    if user is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash(), password + "x")
        audit.record(
            session,
            actor="anonymous",
            action="user.login_failed",
            object_type="user",
            details={"reason": "unknown_user", "client": client},
        )
        return LoginOutcome(error=refused)
    actor = f"user:{user.username}"
    if user.locked_until is not None and user.locked_until > now:
        audit.record(
            session,
            actor=actor,
            action="user.login_refused_locked",
            object_type="user",
            object_id=user.id,
            details={"client": client},
        )
        return LoginOutcome(
            error=f"The account is locked after {policy.max_failed_logins} failed logins until "
            f"{user.locked_until:%H:%M} UTC: wait, or ask an administrator "
            "(`radcheck user enable`).",
            locked=True,
        )
    ok = False
    if user.password_hash is not None:
        try:
            ok = _hasher.verify(user.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
    if not ok or user.disabled_at is not None:
        user.failed_logins = (user.failed_logins or 0) + 1
        details: dict[str, Any] = {
            "reason": "disabled" if user.disabled_at is not None else "bad_password",
            "failed_logins": user.failed_logins,
            "client": client,
        }
        audit.record(
            session,
            actor=actor,
            action="user.login_failed",
            object_type="user",
            object_id=user.id,
            details=details,
        )
        if user.failed_logins >= policy.max_failed_logins:
            user.locked_until = now + timedelta(seconds=policy.lockout_s)
            user.failed_logins = 0
            audit.record(
                session,
                actor=actor,
                action="user.locked",
                object_type="user",
                object_id=user.id,
                details={"until": user.locked_until.isoformat(), "client": client},
            )
        return LoginOutcome(error=refused)
    if _hasher.check_needs_rehash(user.password_hash or ""):
        user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=policy.session_ttl_s)
    row = UserSession(
        user_id=user.id, token_hash=_hash_token(token), expires_at=expires, last_seen_at=now
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.login",
        object_type="user_session",
        object_id=row.id,
        details={"client": client},
    )
    return LoginOutcome(token=token, user=_session_user(user, row.id), expires_at=expires)


def resolve_session(session: Session, token: str, policy: LoginPolicy) -> SessionUser | None:
    """The user of a live session, or None (unknown, expired, idle too long, logged out, disabled)."""
    row = session.scalar(select(UserSession).where(UserSession.token_hash == _hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.expires_at <= now or (now - row.last_seen_at).total_seconds() > policy.idle_timeout_s:
        return None
    user = row.user
    if user.disabled_at is not None:
        return None
    if (now - row.last_seen_at).total_seconds() > 30:
        row.last_seen_at = now
    return _session_user(user, row.id)


def logout(session: Session, session_id: int, *, actor: str) -> None:
    row = session.get(UserSession, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(
            session, actor=actor, action="user.logout", object_type="user_session", object_id=row.id
        )


def resolve_oidc_user(
    session: Session, *, subject: str, username: str | None
) -> SessionUser | None:
    """The enabled local account for a verified OIDC identity (by subject, else by username).

    Roles stay local: an identity provider proves who someone is, RadCheck decides what they may do.
    """
    user = session.scalar(select(User).where(User.oidc_subject == subject))
    if user is None and username:
        user = session.scalar(select(User).where(User.username == username.lower()))
        if user is not None and user.oidc_subject is None:
            user.oidc_subject = subject
    if user is None or user.disabled_at is not None:
        return None
    return _session_user(user, None)
