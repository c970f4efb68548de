"""Check a draft report before signing: POST /check-report, nothing stored."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.ui.client import ApiError
from app.ui.common import (
    AI_LABEL,
    SEVERITY_BORDER,
    Highlight,
    api,
    highlight_html,
    require_login,
    show_error,
)

HEADER_KEYS = (
    "patient_sex",
    "patient_age_years",
    "view_position",
    "body_part",
    "image_laterality",
    "portable",
    "modality",
)

require_login()
st.title("Check a draft report")
st.caption("Nothing is stored. Flags are unverified AI output.")

findings = st.text_area("Findings", key="draft_findings", height=150)
impression = st.text_area("Impression", key="draft_impression", height=90)
study_uid = st.text_input(
    "For a stored study (optional Study Instance UID: its header facts are used)",
    value=st.session_state.get("study_uid", "") if st.session_state.get("draft_use_study") else "",
    key="draft_study",
)
run = st.button("Check draft (g)", shortcut="g", type="primary", key="draft_check")

if run or st.session_state.get("draft_result_for") == (findings, impression, study_uid):
    if not (findings.strip() or impression.strip()):
        st.error("Type or paste the findings and/or the impression first.")
        st.stop()
    body: dict[str, Any] = {"findings": findings or None, "impression": impression or None}
    client = api()
    if study_uid.strip():
        try:
            study = client.study(study_uid.strip())
        except ApiError as err:
            show_error(err, "reading the study's header facts")
            st.stop()
        images = [im for im in study["images"] if im["kind"] == "image"]
        if images:
            header = images[0]["header"]
            body["header"] = {k: header[k] for k in HEADER_KEYS if header.get(k) is not None}
            st.caption(f"Header facts used: {body['header']}")
    try:
        result = client.check_report(body)
    except ApiError as err:
        show_error(err, "checking the draft")
        st.stop()
    st.session_state["draft_result_for"] = (findings, impression, study_uid)
    flags = result["flags"]
    st.warning(result["notice"])
    if not flags:
        st.success("No flags: the checker found nothing to question (it can miss errors).")
    marks: dict[str, list[Highlight]] = {"findings": [], "impression": []}
    for n, flag in enumerate(flags, start=1):
        start, end = (
            flag.get("span_start", flag.get("start")),
            flag.get("span_end", flag.get("end")),
        )
        if flag.get("section") in marks and start is not None and end is not None:
            label = f"#{n} {flag['subtype']}"
            marks[flag["section"]].append(Highlight(int(start), int(end), flag["severity"], label))
        other = (flag.get("evidence") or {}).get("contradicts")
        if isinstance(other, dict) and other.get("section") in marks:
            marks[other["section"]].append(
                Highlight(
                    int(other["start"]),
                    int(other["end"]),
                    flag["severity"],
                    f"#{n} conflicts",
                    counterpart=True,
                )
            )
    html_parts = [
        f"<p><b>{name.upper()}:</b> {highlight_html(text, marks[name])}</p>"
        for name, text in (("findings", findings), ("impression", impression))
        if text.strip()
    ]
    st.markdown("".join(html_parts), unsafe_allow_html=True)
    for n, flag in enumerate(flags, start=1):
        with st.container(border=True):
            colour = SEVERITY_BORDER.get(flag["severity"], "#6b7280")
            st.markdown(
                f'**#{n} · {flag["subtype"]}** · <span style="color:{colour};font-weight:600">'
                f"{flag['severity'].upper()}</span> · :orange-badge[{AI_LABEL}]",
                unsafe_allow_html=True,
            )
            st.write(flag["message"])
            st.caption(
                f"Source: {flag['source']} · rule `{flag['rule_id']}` · confidence {flag['confidence']:.2f}"
            )
