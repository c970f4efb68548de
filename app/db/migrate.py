"""Schema management through Alembic: upgrade, downgrade, and the start-up check for an outdated schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations

__all__ = [
    "SchemaOutdatedError",
    "alembic_config",
    "current_revision",
    "downgrade",
    "ensure_current",
    "head_revision",
    "upgrade",
]

UPGRADE_HINT = "run `radcheck db upgrade` (it applies the Alembic migrations)"


class SchemaOutdatedError(RuntimeError):
    """The database schema is not the one this code expects."""


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migration scripts and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def ensure_current(engine: Engine, url: str) -> None:
    """Refuse to run on a schema that is missing or older (or newer) than the code."""
    current = current_revision(engine)
    head = head_revision(url)
    if current == head:
        return
    if current is None:
        raise SchemaOutdatedError(f"The database has no RadCheck schema yet: {UPGRADE_HINT}.")
    raise SchemaOutdatedError(
        f"The database schema is at revision {current} but this RadCheck expects {head}: "
        f"{UPGRADE_HINT}. If the database is newer than the code, upgrade RadCheck instead."
    )
