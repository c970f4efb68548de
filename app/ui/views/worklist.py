"""The worklist: studies with open flags first (most severe, then oldest), filters, counts, next."""

from __future__ import annotations

from datetime import date
from typing import Any

import streamlit as st

from app.ui.client import ApiError, WorklistFilters
from app.ui.common import api, require_login, show_error

PAGE_SIZE = 25
STUDY_PAGE = "views/study.py"

user = require_login()
st.title("Worklist")
st.caption(f"{user['name']} · flags are unverified AI output: review each one.")


def open_study(uid: str) -> None:
    st.session_state["study_uid"] = uid
    st.session_state.pop("flag_index", None)
    st.switch_page(STUDY_PAGE)


with st.container(border=True):
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1])
    review = c1.selectbox(
        "Review",
        ["unreviewed", "reviewed", "all"],
        index=2,
        key="wl_review",
        help="unreviewed: open flags left; reviewed: every flag decided",
    )
    severity = c2.selectbox(
        "Open flag severity", ["any", "critical", "warning", "info"], key="wl_severity"
    )
    status = c3.selectbox(
        "Study status", ["any", "checked", "complete", "receiving"], key="wl_status"
    )
    subtype = c4.text_input("Subtype", key="wl_subtype", placeholder="e.g. laterality")
    c5, c6, c7 = st.columns([1, 1, 2])
    accession = c5.text_input("Accession", key="wl_accession")
    dates = c6.date_input("Study date range", value=[], key="wl_dates")
    page_no = int(c7.number_input("Page", min_value=1, value=1, step=1, key="wl_page"))

date_from: date | None = None
date_to: date | None = None
if isinstance(dates, tuple) and dates:
    date_from = dates[0]
    date_to = dates[1] if len(dates) > 1 else None
filters = WorklistFilters(
    status=None if status == "any" else status,
    severity=None if severity == "any" else severity,
    subtype=subtype.strip() or None,
    review=None if review == "all" else review,
    date_from=date_from,
    date_to=date_to,
    accession_number=accession.strip() or None,
)
st.session_state["wl_filters"] = filters

b1, b2, _ = st.columns([1, 1, 3])
refresh = b1.button("Refresh (u)", shortcut="u", key="wl_refresh")
if b2.button("Next unreviewed study (n)", shortcut="n", type="primary", key="wl_next"):
    try:
        nxt = api().next_study(filters)
    except ApiError as err:
        show_error(err, "finding the next unreviewed study")
    else:
        if nxt is None:
            st.info("No study with open flags left (with these filters).")
        else:
            open_study(nxt)

try:
    page: dict[str, Any] = api().worklist(
        filters, limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE
    )
except ApiError as err:
    show_error(err, "loading the worklist")
    st.stop()

counts = page["counts"]
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Studies", counts["studies"])
m2.metric("With open flags", counts["with_open_flags"])
m3.metric("Open critical", counts["by_severity"].get("critical", 0))
m4.metric("Open warning", counts["by_severity"].get("warning", 0))
m5.metric("Open info", counts["by_severity"].get("info", 0))

items = page["items"]
if not items:
    st.info("No studies match these filters.")
    st.stop()

rows = [
    {
        "Accession": i["accession_number"] or "-",
        "Study date": i["study_date"] or "-",
        "Description": i["study_description"] or "",
        "Open flags": i["open_flags"],
        "Top severity": i["top_severity"] or "",
        "Subtypes": ", ".join(i["subtypes"]),
        "Check": i["latest_check_status"] or "not checked",
        "Report v": i["report_version"] or "",
        "Study UID": i["study_instance_uid"],
    }
    for i in items
]
top = items[0]
st.markdown(
    f"Top of the list: **{top['accession_number'] or top['study_instance_uid']}** · "
    f"{top['open_flags']} open · {top['top_severity'] or 'no open flags'}"
)
pages = max(1, -(-page["total"] // PAGE_SIZE))
st.caption(
    f"Page {page_no} of {pages} · {page['total']} studies · open flags first, most severe, then oldest"
)
selection = st.dataframe(
    rows,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="wl_table",
    width="stretch",
)
selected_rows = (
    selection.selection.rows if selection is not None and hasattr(selection, "selection") else []
)
if selected_rows:
    open_study(items[selected_rows[0]]["study_instance_uid"])

labels = {
    i["study_instance_uid"]: f"{i['accession_number'] or i['study_instance_uid'][-12:]} · "
    f"{i['open_flags']} open · {i['top_severity'] or 'no open flags'}"
    for i in items
}
o1, o2 = st.columns([3, 1])
choice = o1.selectbox("Study", list(labels), format_func=labels.__getitem__, key="wl_choice")
if o2.button("Open study (o)", shortcut="o", key="wl_open") and choice:
    open_study(choice)
