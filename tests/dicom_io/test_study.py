"""Study completeness: quiet period, never on the first instance, a late instance re-opens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicom_io import study_ready

QUIET = timedelta(seconds=30)
T0 = datetime(2024, 1, 2, 10, 0, tzinfo=UTC)


def test_not_ready_on_its_first_instance() -> None:
    assert not study_ready(T0, T0, QUIET)


def test_ready_after_the_quiet_period_and_not_before() -> None:
    assert not study_ready(T0, T0 + QUIET - timedelta(microseconds=1), QUIET)
    assert study_ready(T0, T0 + QUIET, QUIET)


def test_late_instance_reopens_the_study() -> None:
    now = T0 + 2 * QUIET
    assert study_ready(T0, now, QUIET)
    late = now  # a new instance arrives: the app moves last_instance_at forward
    assert not study_ready(late, now + timedelta(seconds=1), QUIET)
    assert study_ready(late, late + QUIET, QUIET)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="quiet_period must be positive"):
        study_ready(T0, T0, timedelta(0))


def test_naive_datetime_from_the_database_is_taken_as_utc() -> None:
    naive = T0.replace(tzinfo=None)  # what SQLite gives back for a timezone-aware column
    assert not study_ready(naive, T0 + QUIET / 2, QUIET)
    assert study_ready(naive, T0 + QUIET, QUIET)
    assert study_ready(T0, (T0 + QUIET).replace(tzinfo=None), QUIET)
