"""Study completeness: a study is ready for checking after a quiet period with no new instance.

Pure functions: the application keeps the state (first/last instance times) in its database. A
late instance moves ``last_instance_at`` forward, which re-opens the study until the next quiet
period has passed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["study_ready"]


def study_ready(last_instance_at: datetime, now: datetime, quiet_period: timedelta) -> bool:
    """True once ``quiet_period`` has passed since the study's last instance arrived.

    A study is never ready on its first instance alone (``quiet_period`` must be positive). When
    one datetime is naive and the other aware (SQLite returns naive values for timezone-aware
    columns), the naive one is taken as UTC.
    """
    if quiet_period <= timedelta(0):
        raise ValueError(f"quiet_period must be positive, got {quiet_period}")
    if (last_instance_at.tzinfo is None) != (now.tzinfo is None):
        last_instance_at, now = _as_utc(last_instance_at), _as_utc(now)
    return now - last_instance_at >= quiet_period


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
