"""Feedback statistics: per rule and per subtype, how often radiologists accept or dismiss flags.

Each flag counts once, by its current (latest) decision; flags created in the date range count.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Flag, Review

__all__ = ["feedback_csv", "feedback_stats"]


def feedback_stats(
    session: Session, *, date_from: date | None, date_to: date | None
) -> dict[str, list[dict[str, Any]]]:
    latest = (
        select(Review.flag_id, func.max(Review.id).label("review_id"))
        .group_by(Review.flag_id)
        .subquery()
    )
    query = (
        select(Flag.rule_id, Flag.subtype, Review.decision, Review.reason, func.count(Flag.id))
        .outerjoin(latest, latest.c.flag_id == Flag.id)
        .outerjoin(Review, Review.id == latest.c.review_id)
        .group_by(Flag.rule_id, Flag.subtype, Review.decision, Review.reason)
    )
    if date_from:
        query = query.where(Flag.created_at >= datetime.combine(date_from, time(), tzinfo=UTC))
    if date_to:
        end = datetime.combine(date_to + timedelta(days=1), time(), tzinfo=UTC)
        query = query.where(Flag.created_at < end)
    by_rule: dict[str, dict[str, Any]] = {}
    by_subtype: dict[str, dict[str, Any]] = {}
    for rule_id, subtype, decision, reason, count in session.execute(query):
        for table, key in ((by_rule, rule_id), (by_subtype, subtype)):
            row = table.setdefault(
                key,
                {"group": key, "flags": 0, "accepted": 0, "dismissed": 0, "open": 0, "reasons": {}},
            )
            row["flags"] += count
            if decision == "accepted":
                row["accepted"] += count
            elif decision == "dismissed":
                row["dismissed"] += count
                label = reason or "unspecified"
                row["reasons"][label] = row["reasons"].get(label, 0) + count
            else:
                row["open"] += count

    def finish(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        rows = list(table.values())
        for row in rows:
            decided = row["accepted"] + row["dismissed"]
            row["dismissed_share"] = round(row["dismissed"] / decided, 4) if decided else None
        return sorted(rows, key=lambda r: (-(r["dismissed_share"] or 0), -r["flags"], r["group"]))

    return {"by_rule": finish(by_rule), "by_subtype": finish(by_subtype)}


def feedback_csv(stats: dict[str, list[dict[str, Any]]]) -> str:
    out = io.StringIO()
    reasons = [
        "false_positive",
        "not_clinically_relevant",
        "already_corrected",
        "other",
        "unspecified",
    ]
    writer = csv.writer(out)
    writer.writerow(
        ["grouping", "group", "flags", "accepted", "dismissed", "open", "dismissed_share"]
        + [f"dismissed_{r}" for r in reasons]
    )
    for grouping in ("by_rule", "by_subtype"):
        for row in stats[grouping]:
            share = "" if row["dismissed_share"] is None else row["dismissed_share"]
            writer.writerow(
                [grouping.removeprefix("by_"), row["group"], row["flags"], row["accepted"]]
                + [row["dismissed"], row["open"], share]
                + [row["reasons"].get(r, 0) for r in reasons]
            )
    return out.getvalue()
