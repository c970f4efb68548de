"""``radcheck user``: accounts for the people who log in to the dashboard (radiologists, admins)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.settings import Settings

__all__ = ["user_cli"]

user_cli = typer.Typer(
    help="User accounts (passwords stored as argon2 hashes; integrations use API keys).",
    no_args_is_help=True,
)


def _settings() -> Settings:
    from app.cli.main import settings_or_exit

    return settings_or_exit()


def _fail(message: str) -> None:
    typer.echo(f"radcheck: {message}", err=True)
    raise typer.Exit(2)


def _read_password() -> str:
    if sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@user_cli.command("create")
def user_create(
    role: Annotated[str, typer.Option(help="radiologist or admin")],
    name: Annotated[str, typer.Option(help="The person's name, as shown in the audit trail")],
    username: Annotated[str, typer.Option(help="Login name (lower case)")],
    oidc_subject: Annotated[
        str | None, typer.Option(help="The person's OIDC 'sub' (single sign-on; no password)")
    ] = None,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="OIDC only: do not set a local password")
    ] = False,
) -> None:
    """Create a user; the password is asked for (twice) or read from stdin's first line."""
    settings = _settings()
    from app.db.migrate import SchemaOutdatedError, ensure_current
    from app.db.session import Database
    from app.services.errors import ServiceError
    from app.services.users import create_user

    password = None if no_password else _read_password()
    db = Database(settings.database_url)
    try:
        ensure_current(db.engine, db.url)
        with db.session() as session:
            create_user(
                session,
                username=username,
                name=name,
                role=role,
                password=password,
                oidc_subject=oidc_subject,
                actor="cli",
            )
    except (ServiceError, SchemaOutdatedError) as exc:
        _fail(str(exc))
    finally:
        db.dispose()
    typer.echo(f"user {username!r} ({role}) created")


@user_cli.command("list")
def user_list() -> None:
    """List users (never their passwords)."""
    settings = _settings()
    from app.db.session import Database
    from app.services.users import list_users

    db = Database(settings.database_url)
    with db.session() as session:
        for u in list_users(session):
            state = "disabled" if u.disabled_at else "locked" if u.locked_until else "active"
            typer.echo(f"{u.username}\t{u.role}\t{state}\t{u.name}")
    db.dispose()


def _toggle(username: str, enable: bool) -> None:
    settings = _settings()
    from app.db.session import Database
    from app.services.errors import ServiceError
    from app.services.users import disable_user, enable_user

    db = Database(settings.database_url)
    try:
        with db.session() as session:
            (enable_user if enable else disable_user)(session, username, actor="cli")
    except ServiceError as exc:
        _fail(str(exc))
    finally:
        db.dispose()
    typer.echo(f"{'enabled' if enable else 'disabled'} {username}")


@user_cli.command("disable")
def user_disable(username: Annotated[str, typer.Option(help="The login name")]) -> None:
    """Disable a user: their sessions end at once."""
    _toggle(username, enable=False)


@user_cli.command("enable")
def user_enable(username: Annotated[str, typer.Option(help="The login name")]) -> None:
    """Enable a user again (also clears a lock-out)."""
    _toggle(username, enable=True)
