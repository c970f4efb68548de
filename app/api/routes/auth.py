"""Login sessions: log in with a username and password, see who you are, log out."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from app.api.deps import CurrentPrincipal, DbDep
from app.api.errors import ErrorBody
from app.api.people_schemas import LoginIn, MeOut, SessionOut, UserOut
from app.services.users import LoginPolicy, login, logout

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=SessionOut,
    summary="Log in: returns a short-lived session token (Bearer)",
    description="Consecutive failures lock the account for a while (RADCHECK_AUTH__MAX_FAILED_LOGINS, "
    "RADCHECK_AUTH__LOCKOUT_S); every attempt is audited.",
    responses={401: {"model": ErrorBody}, 423: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
def post_login(request: Request, body: LoginIn, db: DbDep) -> SessionOut:
    policy: LoginPolicy = request.app.state.login_policy
    client = request.client.host if request.client else "-"
    outcome = db.run(
        lambda session: login(
            session,
            username=body.username.strip().lower(),
            password=body.password,
            policy=policy,
            client=client,
        ),
        attempts=1,
    )
    if outcome.token is None or outcome.user is None or outcome.expires_at is None:
        # The failure was committed (and audited) before this response.
        raise HTTPException(
            status_code=423 if outcome.locked else 401,
            detail=outcome.error or "Login refused.",
        )
    user = outcome.user
    return SessionOut(
        token=outcome.token,
        expires_at=outcome.expires_at,
        idle_timeout_s=policy.idle_timeout_s,
        user=UserOut(username=user.username, name=user.name, role=user.role.value),
    )


@router.get("/me", response_model=MeOut, summary="Who the presented credential belongs to")
def get_me(principal: CurrentPrincipal) -> MeOut:
    return MeOut(
        kind="apikey"
        if principal.kind == "apikey"
        else "oidc"
        if principal.kind == "oidc"
        else "session",
        name=principal.name,
        username=principal.username,
        role=principal.role.value,
        actor=principal.actor,
    )


@router.post(
    "/logout",
    status_code=204,
    summary="End this session (the token stops working at once)",
)
def post_logout(principal: CurrentPrincipal, db: DbDep) -> None:
    if principal.session_id is not None:
        session_id = principal.session_id
        db.run(lambda session: logout(session, session_id, actor=principal.actor))
