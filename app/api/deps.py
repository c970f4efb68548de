"""Request-scoped dependencies: the settings, a database session, and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db.models import Role
from app.db.session import Database
from app.services.audit import ReadAuditBuffer
from app.services.auth import CredentialResolver, Principal, credential_is_well_formed
from app.services.oidc import OidcVerifier, looks_like_jwt
from app.services.storage import ContentStore
from app.services.users import SESSION_PREFIX, LoginPolicy, resolve_oidc_user, resolve_session
from app.settings import Settings

__all__ = [
    "DbDep",
    "SessionDep",
    "SettingsDep",
    "StoreDep",
    "read_in_thread",
    "require_roles",
]

T = TypeVar("T")

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_bearer = HTTPBearer(auto_error=False, description="The API key as a bearer token.")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_store(request: Request) -> ContentStore:
    store: ContentStore = request.app.state.store
    return store


# Dependencies that only read the request or the app's state are coroutines: FastAPI runs a plain
# function dependency in the thread pool, and every such hop waits for the GIL under load. What
# touches the database (the session, a credential lookup) stays off the event loop.


def get_session(request: Request, db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    # Requests that change things are writers: on SQLite they take the write lock up front
    # (BEGIN IMMEDIATE), so concurrent reviews, retries and submissions serialise cleanly.
    # Reads run outside a transaction (Database.reader): two round trips fewer on PostgreSQL.
    if request.method in ("GET", "HEAD", "OPTIONS"):
        with db.reader() as session:
            yield session
    else:
        with db.session(immediate=True) as session:
            yield session


async def read_in_thread(db: Database, work: Callable[[Session], T]) -> T:
    """``work`` in a read session, in one trip to the thread pool: the hot read routes are
    coroutines that call this instead of depending on ``SessionDep`` (whose opening and closing
    are two more trips, each waiting for the GIL under load)."""
    return await run_in_threadpool(db.read, work)


async def get_read_audit(request: Request) -> ReadAuditBuffer:
    buffer: ReadAuditBuffer = request.app.state.read_audit
    return buffer


SettingsDep = Annotated[Settings, Depends(get_settings)]
ReadAuditDep = Annotated[ReadAuditBuffer, Depends(get_read_audit)]
DbDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[ContentStore, Depends(get_store)]
# scope="function": the transaction commits (or fails) before the response is sent, so a 2xx
# always means the data is durable.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_principal(
    request: Request,
    db: DbDep,
    header_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    # The gate (app/api/gate.py) resolved the credential before the body was read.
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    key = header_key or (bearer.credentials if bearer is not None else None)
    return await run_in_threadpool(resolve_principal, request, db, key)


def principal_of_request(request: Request) -> Principal:
    """The caller, from the request's headers alone (the gate's resolver): 401 when unknown."""
    key = request.headers.get("x-api-key")
    if not key:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else None
    db: Database = request.app.state.db
    return resolve_principal(request, db, key)


def resolve_principal(request: Request, db: Database, key: str | None) -> Principal:
    if not key:
        raise HTTPException(
            status_code=401,
            detail="Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>' "
            "(create one with `radcheck apikey create --role ROLE --name NAME`).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if key.startswith(SESSION_PREFIX) or looks_like_jwt(key):
        return _user_principal(request, db, key)
    token: str = key
    if not credential_is_well_formed(token):
        raise HTTPException(
            status_code=401,
            detail="Malformed credential: an API key is 'rck_' followed by URL-safe characters "
            "(copy it exactly as `radcheck apikey create` printed it).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # No cache: one indexed lookup per request, so a revocation takes effect on the next request.
    resolvers: list[CredentialResolver] = request.app.state.credential_resolvers

    def resolve(session: Session) -> Principal | None:
        for resolver in resolvers:
            found = resolver(session, token)
            if found is not None:
                return found
        return None

    principal = db.read(resolve)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="Unknown or revoked API key: ask an administrator for a valid key.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def _user_principal(request: Request, db: Database, token: str) -> Principal:
    """A person: a login session (checked in the database on every request) or an OIDC ID token."""
    policy: LoginPolicy = request.app.state.login_policy
    verifier: OidcVerifier | None = request.app.state.oidc
    with db.session() as session:
        if token.startswith(SESSION_PREFIX):
            user = resolve_session(session, token, policy)
            what = "Your session has ended (logged out, expired or the account was disabled): log in again."
        elif verifier is not None:
            identity = verifier.verify(token)
            user = (
                resolve_oidc_user(session, subject=identity.subject, username=identity.username)
                if identity is not None
                else None
            )
            what = (
                "The OIDC token is invalid or expired, or names no enabled RadCheck user: log in "
                "again, or ask an administrator to create your account (`radcheck user create`)."
            )
        else:
            user = None
            what = "OIDC tokens are not accepted: RADCHECK_AUTH__OIDC_ISSUER is not configured."
    if user is None:
        raise HTTPException(status_code=401, detail=what, headers={"WWW-Authenticate": "Bearer"})
    return Principal(
        key_id=0,
        name=user.name,
        role=user.role,
        kind="session" if token.startswith(SESSION_PREFIX) else "oidc",
        username=user.username,
        session_id=user.session_id,
    )


def require_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits only the given roles (admin is always admitted)."""
    allowed = {Role.ADMIN, *roles}

    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status_code=403,
                detail=f"{'The API key' if principal.kind == 'apikey' else 'The user'} "
                f"{principal.name!r} has role {principal.role.value!r}; "
                f"this operation needs one of: {names}.",
            )
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require_roles(Role.RADIOLOGIST, Role.INTEGRATION))]
Integrator = Annotated[Principal, Depends(require_roles(Role.INTEGRATION))]
Radiologist = Annotated[Principal, Depends(require_roles(Role.RADIOLOGIST))]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(require_roles())]
Requester = Annotated[Principal, Depends(require_roles(Role.RADIOLOGIST, Role.INTEGRATION))]
