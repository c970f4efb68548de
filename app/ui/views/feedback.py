"""Feedback for the team: accepted vs dismissed flags per rule and per subtype; CSV export."""

from __future__ import annotations

from datetime import date

import streamlit as st

from app.ui.client import ApiError
from app.ui.common import api, require_login, show_error

require_login()
st.title("Feedback")
st.caption(
    "Each flag counts once, by its latest decision. Rules with many dismissals are listed first."
)

dates = st.date_input("Flags created between", value=[], key="fb_dates")
date_from: date | None = None
date_to: date | None = None
if isinstance(dates, tuple) and dates:
    date_from = dates[0]
    date_to = dates[1] if len(dates) > 1 else None

client = api()
try:
    stats = client.feedback(date_from, date_to)
    csv_bytes = client.feedback_csv(date_from, date_to)
except ApiError as err:
    show_error(err, "loading feedback statistics")
    st.stop()


def table(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [
        {
            "Group": r["group"],
            "Flags": r["flags"],
            "Accepted": r["accepted"],
            "Dismissed": r["dismissed"],
            "Open": r["open"],
            "Dismissed share": ""
            if r["dismissed_share"] is None
            else f"{float(r['dismissed_share']):.0%}",  # type: ignore[arg-type]
            "Reasons": ", ".join(f"{k}: {v}" for k, v in dict(r["reasons"]).items()),  # type: ignore[call-overload]
        }
        for r in rows
    ]


st.subheader("By rule")
if stats["by_rule"]:
    st.dataframe(table(stats["by_rule"]), hide_index=True, key="fb_rules")
else:
    st.info("No flags in this range.")
st.subheader("By subtype")
if stats["by_subtype"]:
    st.dataframe(table(stats["by_subtype"]), hide_index=True, key="fb_subtypes")
st.download_button(
    "Download CSV", csv_bytes, file_name="radcheck-feedback.csv", mime="text/csv", key="fb_csv"
)
