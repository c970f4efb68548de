"""One study: the image (window/level, invert, zoom/pan, model boxes), the report with flagged
sentences highlighted, one card per flag with accept/dismiss (keyboard shortcuts), check history."""

from __future__ import annotations

import base64
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app.ui.client import ApiError, Flag, WorklistFilters
from app.ui.common import (
    AI_LABEL,
    REASONS,
    SEVERITY_BORDER,
    Highlight,
    api,
    highlight_html,
    require_login,
    show_error,
)

RESULT_STATUS = {
    "P": "preliminary (P)",
    "F": "final (F)",
    "C": "corrected (C)",
    "X": "cancelled (X)",
}
"""HL7 OBR-25 result status of the report version, as the RIS sent it (null: not from HL7)."""

SECTIONS = ("indication", "comparison", "technique", "findings", "impression")
PRESETS = {
    "default": "File window (what the checker used)",
    "auto": "Auto (0.5-99.5 %)",
    "high_contrast": "High contrast (5-95 %)",
    "full_range": "Full range",
    "custom": "Custom centre / width",
}

user = require_login()
uid = st.session_state.get("study_uid") or st.query_params.get("study")
if not uid:
    st.info("Open a study from the worklist.")
    st.page_link("views/worklist.py", label="Go to the worklist")
    st.stop()
st.session_state["study_uid"] = uid
st.query_params["study"] = uid  # a deep link: reload, log in, and you are back here

saved = st.session_state.pop("saved", None)
if saved:
    st.success(saved)

client = api()
try:
    study: dict[str, Any] = client.study(uid)
except ApiError as err:
    show_error(err, "loading the study")
    st.stop()

checks: list[dict[str, Any]] = study["checks"]
latest = checks[-1] if checks else None
reports = {r["id"]: r for r in study["reports"]}
report = (
    reports.get(latest["report_id"])
    if latest
    else (study["reports"][-1] if study["reports"] else None)
)
flags: list[Flag] = list(latest["flags"]) if latest else []

st.title(f"Study {study['accession_number'] or uid[-16:]}")
st.caption(
    f"Study date {study['study_date'] or '-'} · {study['study_description'] or ''} · status "
    f"{study['status']} · Study Instance UID {uid}"
)
st.warning(study["notice"])


def current_review(flag: Flag) -> dict[str, Any] | None:
    return dict(flag["reviews"][-1]) if flag["reviews"] else None


open_indices = [i for i, f in enumerate(flags) if not f["reviews"]]
if "flag_index" not in st.session_state or st.session_state.get("flag_study") != uid:
    st.session_state["flag_index"] = open_indices[0] if open_indices else 0
    st.session_state["flag_study"] = uid
index = min(int(st.session_state["flag_index"]), max(len(flags) - 1, 0))


def decide(flag: Flag, number: int, decision: str, reason: str | None, comment: str | None) -> None:
    """Save a decision at once (page state dies on reload); say plainly when it failed."""
    try:
        client.review(flag["id"], decision, reason=reason, comment=comment or None)
    except ApiError as err:
        if err.kind == "unauthorized":
            show_error(err, "saving your decision")
        st.error(
            f"Decision NOT saved for flag #{number} ({err.detail}). The flag keeps its previous "
            "state; try again."
        )
        return
    label = (
        "accepted"
        if decision == "accepted"
        else f"dismissed ({REASONS.get(reason or '', 'no reason')})"
    )
    st.session_state["saved"] = f"Saved: flag #{number} {label}."
    nxt = [i for i in open_indices if i != number - 1]
    st.session_state["flag_index"] = nxt[0] if nxt else number - 1
    st.rerun()


left, right = st.columns([1.1, 1], gap="medium")

# ---- image ----
with left:
    st.subheader("Image")
    images = [im for im in study["images"] if im["kind"] == "image"]
    chosen = (latest or {}).get("selection", {}).get("chosen") if latest else None
    if not images:
        st.info("This study has no image to show.")
    else:
        uids = [im["sop_instance_uid"] for im in images]
        default_image = uids.index(chosen) if chosen in uids else 0
        sop = st.selectbox(
            "Image",
            uids,
            index=default_image,
            format_func=lambda s: (
                ("checked image · " if s == chosen else "") + f"instance {s[-12:]}"
            ),
            key="img_sop",
        )
        c1, c2, c3 = st.columns([2, 1, 1])
        preset = c1.selectbox(
            "Window", list(PRESETS), format_func=PRESETS.__getitem__, key="img_preset"
        )
        invert = c2.toggle("Invert", key="img_invert")
        show_boxes = c3.toggle("Model boxes", value=True, key="img_boxes")
        center = width = None
        if preset == "custom":
            w1, w2 = st.columns(2)
            center = w1.number_input("Centre", value=2048.0, step=50.0, key="img_center")
            width = w2.number_input(
                "Width", value=4096.0, min_value=1.0, step=50.0, key="img_width"
            )
        try:
            img = client.rendered(
                sop,
                preset="default" if preset == "custom" else preset,
                center=center,
                width=width,
                invert=invert,
                size=1024,
            )
        except ApiError as err:
            show_error(err, "rendering the image")
        else:
            fig = go.Figure()
            data_uri = f"data:{img.media_type};base64," + base64.b64encode(img.content).decode()
            sx = img.original_width / img.width
            sy = img.original_height / img.height
            fig.add_trace(go.Image(source=data_uri, dx=sx, dy=sy, hoverinfo="skip"))
            if show_boxes:
                for n, flag in enumerate(flags, start=1):
                    box = flag["evidence"].get("box_pixels")
                    if not (isinstance(box, list) and len(box) == 4):
                        continue
                    x1, y1, x2, y2 = (float(v) for v in box)
                    colour = SEVERITY_BORDER.get(flag["severity"], "#6b7280")
                    fig.add_shape(
                        type="rect",
                        x0=x1,
                        y0=y1,
                        x1=x2,
                        y1=y2,
                        line={"color": colour, "width": 4 if n - 1 == index else 2},
                    )
                    fig.add_annotation(
                        x=x1,
                        y=y1,
                        text=f"#{n} {flag['subtype']} (AI)",
                        showarrow=False,
                        xanchor="left",
                        yanchor="bottom",
                        font={"color": "white"},
                        bgcolor=colour,
                    )
            fig.update_layout(
                margin={"l": 0, "r": 0, "t": 0, "b": 0},
                height=640,
                dragmode="pan",
                xaxis={"visible": False},
                yaxis={"visible": False, "scaleanchor": "x"},
            )
            st.plotly_chart(
                fig,
                key="img_chart",
                config={
                    "scrollZoom": True,
                    "displaylogo": False,
                    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
                },
            )
            st.caption(
                f"{img.original_width} x {img.original_height} px shown at {img.width} x {img.height}"
                f" · window centre {img.window_center or '-'} width {img.window_width or '-'} "
                f"({img.window_source}) · scroll to zoom, drag to pan, double-click to reset"
            )

# ---- report and flags ----
with right:
    if report is None:
        st.info("No report has been received for this study yet.")
    else:
        st.subheader(f"Report, version {report['version']}")
        status = RESULT_STATUS.get(report.get("result_status") or "")
        if status:
            st.caption(f"RIS result status: {status}")
        marks: dict[str, list[Highlight]] = {s: [] for s in SECTIONS}
        for n, flag in enumerate(flags, start=1):
            if (
                flag["section"] in marks
                and flag["span_start"] is not None
                and flag["span_end"] is not None
            ):
                marks[flag["section"]].append(
                    Highlight(
                        flag["span_start"],
                        flag["span_end"],
                        flag["severity"],
                        f"#{n} {flag['subtype']}",
                    )
                )
            other = flag["evidence"].get("contradicts")
            if isinstance(other, dict) and other.get("section") in marks:
                marks[str(other["section"])].append(
                    Highlight(
                        int(other["start"]),
                        int(other["end"]),
                        flag["severity"],
                        f"#{n} conflicts with this",
                        counterpart=True,
                    )
                )
        body = []
        for section in SECTIONS:
            text = report.get(section)
            if text:
                body.append(
                    f"<p><b>{section.upper()}:</b> {highlight_html(text, marks[section])}</p>"
                )
        st.markdown(f'<div class="rc-report">{"".join(body)}</div>', unsafe_allow_html=True)
        st.caption(
            "Highlighted: flagged sentence (colour = severity); dashed: the sentence it conflicts with."
        )

        if len(study["reports"]) > 1:
            with st.expander(f"Earlier versions ({len(study['reports'])} in all) and what changed"):
                versions = [r["version"] for r in study["reports"]]
                v = st.selectbox(
                    "Compare version", versions[:-1], index=len(versions) - 2, key="diff_from"
                )
                try:
                    diff = client.report_diff(uid, int(v), versions[-1])
                except ApiError as err:
                    show_error(err, "comparing report versions")
                else:
                    for s in diff["sections"]:
                        if s["changed"]:
                            st.markdown(
                                f"**{s['section']}** (v{diff['from_version']} → v{diff['to_version']})"
                            )
                            st.code(s["unified_diff"], language="diff")

    st.subheader(f"Flags ({len(flags)})")
    if latest is None:
        st.info("This study has not been checked yet.")
    elif latest["status"] not in ("succeeded",):
        st.info(f"Latest check #{latest['id']} is {latest['status']}. {latest.get('error') or ''}")
    if flags:
        k1, k2, k3 = st.columns(3)
        if k1.button("Prev flag (k)", shortcut="k", key="flag_prev", width="stretch"):
            st.session_state["flag_index"] = max(index - 1, 0)
            st.rerun()
        if k2.button("Next flag (j)", shortcut="j", key="flag_next", width="stretch"):
            st.session_state["flag_index"] = min(index + 1, len(flags) - 1)
            st.rerun()
        next_study = k3.button("Next study (n)", shortcut="n", key="study_next", width="stretch")
        a1, a2 = st.columns(2)
        accept_key = a1.button(
            f"Accept flag #{index + 1} (a)",
            shortcut="a",
            type="primary",
            key="flag_accept",
            width="stretch",
        )
        dismiss_key = a2.button(
            f"Dismiss flag #{index + 1} (d)", shortcut="d", key="flag_dismiss", width="stretch"
        )
        if next_study:
            filters = st.session_state.get("wl_filters", WorklistFilters())
            try:
                nxt = client.next_study(filters, after=uid)
            except ApiError as err:
                show_error(err, "finding the next study")
            else:
                if nxt is None:
                    st.info("No other study with open flags.")
                else:
                    st.session_state["study_uid"] = nxt
                    st.session_state.pop("flag_index", None)
                    st.rerun()
        r1, r2 = st.columns([1, 1])
        reason = r1.selectbox(
            "Dismiss reason", list(REASONS), format_func=REASONS.__getitem__, key="dismiss_reason"
        )
        comment = r2.text_input("Comment (needed for Other)", key="dismiss_comment")
        selected = flags[index]
        if accept_key:
            decide(selected, index + 1, "accepted", None, None)
        if dismiss_key:
            decide(selected, index + 1, "dismissed", reason, comment)

    for n, flag in enumerate(flags, start=1):
        ev = flag["evidence"]
        review = current_review(flag)
        is_selected = n - 1 == index
        with st.container(border=True, key=f"flag_card_{flag['id']}"):
            colour = SEVERITY_BORDER.get(flag["severity"], "#6b7280")
            marker = "▶ " if is_selected else ""
            st.markdown(
                f"{marker}**#{n} · {flag['subtype']}** · "
                f'<span style="color:{colour};font-weight:600">{flag["severity"].upper()}</span> · '
                f":orange-badge[{AI_LABEL}]",
                unsafe_allow_html=True,
            )
            st.write(flag["message"])
            if flag["source"] == "model":
                source = (
                    f"model · prompt `{ev.get('prompt_id', '?')}` v{ev.get('prompt_version', '?')}"
                )
            else:
                source = f"{flag['source'].replace('_', ' ')} · rule `{flag['rule_id']}` v{ev.get('rule_version', '?')}"
            st.caption(
                f"Source: {source} · confidence {flag['confidence']:.2f} · {flag['section'] or '-'} sentence {(flag['sentence_index'] or 0) + 1}"
            )
            answer = ev.get("model_answer") or ev.get("generated_sentence")
            if answer:
                st.markdown(f"Model answer (unverified AI output): `{str(answer)[:300]}`")
            if review is None:
                st.markdown("**Open**: no decision yet")
            else:
                why = (
                    f" · {REASONS.get(review['reason'] or '', review['reason'])}"
                    if review.get("reason")
                    else ""
                )
                note = f" · “{review['comment']}”" if review.get("comment") else ""
                st.markdown(
                    f"**{review['decision'].capitalize()}**{why}{note} by {review['reviewer']} at "
                    f"{str(review['created_at'])[:19].replace('T', ' ')} UTC"
                )
                if len(flag["reviews"]) > 1:
                    with st.expander(f"Decision history ({len(flag['reviews'])})"):
                        for r in flag["reviews"]:
                            st.caption(
                                f"{str(r['created_at'])[:19]} · {r['decision']} · {r.get('reason') or ''} · {r['reviewer']}"
                            )
            b1, b2, b3 = st.columns([1, 1, 1])
            if b1.button("Select", key=f"sel_{flag['id']}", disabled=is_selected):
                st.session_state["flag_index"] = n - 1
                st.rerun()
            if b2.button("Accept", key=f"acc_{flag['id']}"):
                decide(flag, n, "accepted", None, None)
            if b3.button("Dismiss", key=f"dis_{flag['id']}"):
                decide(
                    flag,
                    n,
                    "dismissed",
                    st.session_state.get("dismiss_reason"),
                    st.session_state.get("dismiss_comment"),
                )

    with st.expander(f"Check history ({len(checks)})"):
        for job in reversed(checks):
            version = reports.get(job["report_id"], {}).get("version", "?")
            st.markdown(
                f"**Check #{job['id']}** · {job['status']} · report v{version} · "
                f"{len(job['flags'])} flags · verdict {job['verdict_simple'] or '-'} · "
                f"requested by {job['requested_by'] or '-'} at {str(job['created_at'])[:19]}"
            )
            st.json(
                {"timings_ms": job["stage_timings_ms"], "provenance": job["provenance"]},
                expanded=False,
            )
        if st.button("Re-check this study", key="recheck"):
            try:
                job = client.request_check(uid)
            except ApiError as err:
                show_error(err, "requesting a re-check")
            else:
                st.session_state["saved"] = (
                    f"Check #{job['id']} is {job['status']}; refresh to see its result."
                )
                st.rerun()
