"""User accounts (admin): list, disable (ends their sessions at once), enable (clears a lock-out)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import Admin, DbDep, SessionDep
from app.api.errors import ErrorBody
from app.api.people_schemas import UserOut
from app.db.models import User
from app.services.users import disable_user, enable_user, list_users

router = APIRouter(prefix="/users", tags=["users"])

UsernamePath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._@-]{1,63}$")]


def user_out(user: User) -> UserOut:
    return UserOut(
        username=user.username,
        name=user.name,
        role=user.role,
        disabled=user.disabled_at is not None,
        locked_until=user.locked_until,
        last_login_at=user.last_login_at,
    )


@router.get("", response_model=list[UserOut], summary="List user accounts")
def get_users(session: SessionDep, principal: Admin) -> list[UserOut]:
    return [user_out(u) for u in list_users(session)]


@router.post(
    "/{username}/disable",
    response_model=UserOut,
    summary="Disable a user; their sessions end immediately",
    responses={404: {"model": ErrorBody}},
)
def post_disable(username: UsernamePath, db: DbDep, principal: Admin) -> UserOut:
    return db.run(lambda s: user_out(disable_user(s, username, actor=principal.actor)))


@router.post(
    "/{username}/enable",
    response_model=UserOut,
    summary="Enable a user again and clear a lock-out",
    responses={404: {"model": ErrorBody}},
)
def post_enable(username: UsernamePath, db: DbDep, principal: Admin) -> UserOut:
    return db.run(lambda s: user_out(enable_user(s, username, actor=principal.actor)))
