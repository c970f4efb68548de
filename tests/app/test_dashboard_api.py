"""The dashboard's backend: users and sessions, lock-out, OIDC, worklist, rendered images, reviews
with reasons and history, report diffs and feedback statistics, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api import create_app
from app.db.session import Database
from app.services.users import create_user
from app.settings import Settings
from tests.app.api_support import REPORT, assert_error_shape, upload, wait_for_check
from tests.app.conftest import auth

API = "/api/v1"
PASSWORD = "correct horse battery"


@pytest.fixture
def users(settings: Settings) -> dict[str, str]:
    db = Database(settings.database_url)
    with db.session() as session:
        create_user(
            session, username="jdoe", name="Dr Jane Doe", role="radiologist", password=PASSWORD
        )
        create_user(session, username="boss", name="Admin Boss", role="admin", password=PASSWORD)
    db.dispose()
    return {"radiologist": "jdoe", "admin": "boss"}


def login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post(f"{API}/auth/login", json={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_rows(settings: Settings, action_prefix: str) -> list[tuple[str, str, str]]:
    from sqlalchemy import select

    from app.db.models import AuditEvent

    db = Database(settings.database_url)
    with db.session() as session:
        rows = [
            (e.actor, e.action, json.dumps(e.details))
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            if e.action.startswith(action_prefix)
        ]
    db.dispose()
    return rows


def checked_study(
    client: TestClient, keys: dict[str, str], rg1: Path, report: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    integ = keys["integration"]
    uid = upload(client, integ, rg1).json()["accepted"][0]["study_instance_uid"]
    assert (
        client.post(f"{API}/studies/{uid}/reports", json=report, headers=auth(integ)).status_code
        == 201
    )
    job = client.post(f"{API}/studies/{uid}/checks", headers=auth(integ)).json()
    return uid, wait_for_check(client, integ, job["id"])


def test_login_me_logout_takes_effect_at_once(
    client: TestClient, users: dict[str, str], settings: Settings
) -> None:
    refused = assert_error_shape(login(client, "jdoe", "wrong password"), 401, "unauthorized")
    assert "Wrong username or password" in refused["detail"]
    assert_error_shape(login(client, "nobody", PASSWORD), 401, "unauthorized")
    ok = login(client, "JDoe ")
    assert ok.status_code == 200, ok.text
    body = ok.json()
    token = body["token"]
    assert token.startswith("rcs_") and body["user"]["name"] == "Dr Jane Doe"
    me = client.get(f"{API}/auth/me", headers=bearer(token)).json()
    assert me == {
        "kind": "session",
        "name": "Dr Jane Doe",
        "username": "jdoe",
        "role": "radiologist",
        "actor": "user:jdoe",
    }
    assert client.get(f"{API}/worklist", headers=bearer(token)).status_code == 200
    assert client.post(f"{API}/auth/logout", headers=bearer(token)).status_code == 204
    gone = assert_error_shape(
        client.get(f"{API}/worklist", headers=bearer(token)), 401, "unauthorized"
    )
    assert "log in again" in gone["detail"]
    actions = [a for _, a, _ in audit_rows(settings, "user.")]
    assert (
        actions.count("user.login_failed") == 2
        and "user.login" in actions
        and "user.logout" in actions
    )


def test_lockout_after_repeated_failures_is_audited_and_admin_can_clear_it(
    client: TestClient, users: dict[str, str], settings: Settings
) -> None:
    for _ in range(settings.auth.max_failed_logins):
        assert login(client, "jdoe", "wrong password").status_code == 401
    locked = assert_error_shape(login(client, "jdoe"), 423, "locked")  # even the right password
    assert "locked" in locked["detail"] and "radcheck user enable" in locked["detail"]
    rows = audit_rows(settings, "user.")
    assert ("user:jdoe", "user.locked") in [(a, b) for a, b, _ in rows]
    assert any(b == "user.login_refused_locked" for _, b, _ in rows)
    admin = login(client, "boss").json()["token"]
    assert client.post(f"{API}/users/jdoe/enable", headers=bearer(admin)).status_code == 200
    assert login(client, "jdoe").status_code == 200


def test_disabling_a_user_ends_their_session_immediately(
    client: TestClient, users: dict[str, str]
) -> None:
    token = login(client, "jdoe").json()["token"]
    admin = login(client, "boss").json()["token"]
    assert client.get(f"{API}/worklist", headers=bearer(token)).status_code == 200
    out = client.post(f"{API}/users/jdoe/disable", headers=bearer(admin))
    assert out.status_code == 200 and out.json()["disabled"] is True
    assert client.get(f"{API}/worklist", headers=bearer(token)).status_code == 401
    assert login(client, "jdoe").status_code == 401
    assert_error_shape(
        client.post(f"{API}/users/nobody/disable", headers=bearer(admin)), 404, "not_found"
    )


def test_sessions_expire_after_their_lifetime_or_idle_time(
    client: TestClient, users: dict[str, str], settings: Settings
) -> None:
    """Expiry is checked against the stored times (moved into the past here, not waited for)."""
    from datetime import timedelta

    from sqlalchemy import update

    from app.db.models import UserSession, utcnow

    db = Database(settings.database_url)
    for column in ("expires_at", "last_seen_at"):
        token = login(client, "jdoe").json()["token"]
        assert client.get(f"{API}/auth/me", headers=bearer(token)).status_code == 200
        past = utcnow() - timedelta(seconds=settings.auth.idle_timeout_s + 60)
        with db.session() as session:
            session.execute(
                update(UserSession).where(UserSession.revoked_at.is_(None)).values({column: past})
            )
        gone = client.get(f"{API}/auth/me", headers=bearer(token))
        assert gone.status_code == 401, column
        assert "log in again" in gone.json()["detail"]
        with db.session() as session:  # end it for the next round
            session.execute(update(UserSession).values(revoked_at=utcnow()))
    db.dispose()


ROUTES = [
    ("GET", "/worklist", {"radiologist", "integration", "admin"}),
    ("GET", "/worklist/next", {"radiologist", "integration", "admin"}),
    ("GET", "/feedback/stats", {"radiologist", "admin"}),
    ("GET", "/feedback/stats.csv", {"radiologist", "admin"}),
    ("GET", "/users", {"admin"}),
    ("POST", "/users/jdoe/enable", {"admin"}),
    ("GET", "/auth/me", {"radiologist", "integration", "admin"}),
]


def test_role_matrix_for_the_new_routes(
    client: TestClient, keys: dict[str, str], users: dict[str, str]
) -> None:
    sessions = {
        "radiologist": login(client, "jdoe").json()["token"],
        "admin": login(client, "boss").json()["token"],
    }
    for method, path, allowed in ROUTES:
        assert client.request(method, f"{API}{path}").status_code == 401, path
        for role, key in keys.items():
            status = client.request(method, f"{API}{path}", headers=auth(key)).status_code
            assert (status < 400) == (role in allowed), (path, role, status)
            if status >= 400:
                assert status == 403, (path, role, status)
        for role, token in sessions.items():
            status = client.request(method, f"{API}{path}", headers=bearer(token)).status_code
            assert (status < 400) == (role in allowed), (path, "user", role, status)
    # Reviews are for radiologists (and admins), never for integrations; image reads for readers.
    assert (
        client.post(
            f"{API}/flags/1/reviews",
            json={"decision": "accepted"},
            headers=auth(keys["integration"]),
        ).status_code
        == 403
    )
    assert client.get(f"{API}/instances/1.2.3/rendered").status_code == 401


def test_worklist_order_filters_counts_next_and_reviews(
    client: TestClient,
    keys: dict[str, str],
    users: dict[str, str],
    rg1_path: Path,
    tmp_path: Path,
    settings: Settings,
) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    # Three studies: one clean, one with a laterality flag (warning), one copy with two flags.
    def copy_with_new_uids(name: str) -> Path:
        ds = pydicom.dcmread(rg1_path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
            generate_uid(),
            generate_uid(),
            generate_uid(),
        )
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber = name
        out = tmp_path / f"{name}.dcm"
        ds.save_as(out)
        return out

    clean = {
        "findings": "The lungs are clear. No pleural effusion.",
        "impression": "No acute disease.",
    }
    clean_uid, _ = checked_study(client, keys, copy_with_new_uids("CLEAN1"), clean)
    flagged_uid, check = checked_study(client, keys, copy_with_new_uids("FLAG1"), REPORT)
    assert check["flags"], check
    token = login(client, "jdoe").json()["token"]
    page = client.get(f"{API}/worklist", headers=bearer(token)).json()
    uids = [i["study_instance_uid"] for i in page["items"]]
    assert uids.index(flagged_uid) < uids.index(clean_uid)
    first = page["items"][0]
    assert first["study_instance_uid"] == flagged_uid and first["open_flags"] == len(check["flags"])
    assert (
        first["top_severity"] == check["flags"][0]["severity"] and "laterality" in first["subtypes"]
    )
    assert page["counts"]["with_open_flags"] == 1 and page["counts"]["studies"] == 2
    assert page["counts"]["open_flags"] == len(check["flags"])
    only = client.get(
        f"{API}/worklist", params={"review": "unreviewed"}, headers=bearer(token)
    ).json()
    assert [i["study_instance_uid"] for i in only["items"]] == [flagged_uid]
    by_acc = client.get(
        f"{API}/worklist", params={"accession_number": "CLEAN1"}, headers=bearer(token)
    ).json()
    assert [i["study_instance_uid"] for i in by_acc["items"]] == [clean_uid]
    by_subtype = client.get(
        f"{API}/worklist", params={"subtype": "laterality"}, headers=bearer(token)
    ).json()
    assert [i["study_instance_uid"] for i in by_subtype["items"]] == [flagged_uid]
    paged = client.get(
        f"{API}/worklist", params={"limit": 1, "offset": 1}, headers=bearer(token)
    ).json()
    assert [i["study_instance_uid"] for i in paged["items"]] == [clean_uid] and paged["total"] == 2
    nxt = client.get(f"{API}/worklist/next", headers=bearer(token)).json()
    assert nxt["study_instance_uid"] == flagged_uid
    assert client.get(
        f"{API}/worklist/next", params={"after": flagged_uid}, headers=bearer(token)
    ).json() == {"study_instance_uid": None}
    assert_error_shape(
        client.get(f"{API}/worklist", params={"severity": "huge"}, headers=bearer(token)),
        422,
        "invalid_input",
    )

    # Reviews: reasons validated; a later decision supersedes, both stay; audit names the user.
    flag_id = check["flags"][0]["id"]
    other = client.post(
        f"{API}/flags/{flag_id}/reviews",
        json={"decision": "dismissed", "reason": "other"},
        headers=bearer(token),
    )
    assert_error_shape(other, 422, "invalid_input")
    assert "needs a comment" in other.json()["detail"]
    bad = client.post(
        f"{API}/flags/{flag_id}/reviews",
        json={"decision": "accepted", "reason": "false_positive"},
        headers=bearer(token),
    )
    assert_error_shape(bad, 422, "invalid_input")
    d1 = client.post(
        f"{API}/flags/{flag_id}/reviews",
        json={"decision": "dismissed", "reason": "false_positive"},
        headers=bearer(token),
    )
    assert (
        d1.status_code == 201
        and d1.json()["reviewer"] == "user:jdoe"
        and d1.json()["reason"] == "false_positive"
    )
    d2 = client.post(
        f"{API}/flags/{flag_id}/reviews", json={"decision": "accepted"}, headers=bearer(token)
    )
    assert d2.status_code == 201
    history = client.get(f"{API}/flags/{flag_id}/reviews", headers=bearer(token)).json()
    assert [(h["decision"], h["current"]) for h in history] == [
        ("dismissed", False),
        ("accepted", True),
    ]
    reviews = audit_rows(settings, "flag.")
    assert [(a, b) for a, b, _ in reviews][-2:] == [
        ("user:jdoe", "flag.dismissed"),
        ("user:jdoe", "flag.accepted"),
    ]

    # Feedback: the current decision counts (accepted), the CSV carries the same rows.
    stats = client.get(f"{API}/feedback/stats", headers=bearer(token)).json()
    rule = next(r for r in stats["by_rule"] if r["group"] == check["flags"][0]["rule_id"])
    assert rule["accepted"] == 1 and rule["dismissed"] == 0
    csv_text = client.get(f"{API}/feedback/stats.csv", headers=bearer(token)).text
    assert csv_text.splitlines()[0].startswith("grouping,group,flags,accepted,dismissed")
    assert f"rule,{check['flags'][0]['rule_id']}," in csv_text
    assert any(
        b == "feedback.exported" and a == "user:jdoe"
        for a, b, _ in audit_rows(settings, "feedback.")
    )


def test_report_diff_between_versions(
    client: TestClient, keys: dict[str, str], rg1_path: Path
) -> None:
    integ = keys["integration"]
    uid = upload(client, integ, rg1_path).json()["accepted"][0]["study_instance_uid"]
    assert_error_shape(
        client.get(f"{API}/studies/{uid}/report-diff", headers=auth(integ)), 404, "not_found"
    )
    client.post(f"{API}/studies/{uid}/reports", json=REPORT, headers=auth(integ))
    fixed = {**REPORT, "impression": "Small right pleural effusion."}
    client.post(f"{API}/studies/{uid}/reports", json=fixed, headers=auth(integ))
    diff = client.get(f"{API}/studies/{uid}/report-diff", headers=auth(integ)).json()
    assert (diff["from_version"], diff["to_version"]) == (1, 2)
    changed = {s["section"]: s for s in diff["sections"] if s["changed"]}
    assert list(changed) == ["impression"]
    assert "-Small left pleural effusion." in changed["impression"]["unified_diff"]
    assert "+Small right pleural effusion." in changed["impression"]["unified_diff"]
    missing = client.get(
        f"{API}/studies/{uid}/report-diff", params={"to_version": 9}, headers=auth(integ)
    )
    assert "versions are [1, 2]" in assert_error_shape(missing, 404, "not_found")["detail"]


def test_rendered_image_window_invert_size_and_cache(
    client: TestClient, keys: dict[str, str], rg1_path: Path
) -> None:
    import numpy as np

    import dicom_io

    integ = keys["integration"]
    sop = upload(client, integ, rg1_path).json()["accepted"][0]["sop_instance_uid"]
    url = f"{API}/instances/{sop}/rendered"
    first = client.get(url, params={"size": 512}, headers=auth(integ))
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.headers["X-Render-Cache"] == "miss"
    img = Image.open(io.BytesIO(first.content))
    assert max(img.size) == 512 and img.mode == "L"
    assert (int(first.headers["X-Original-Width"]), int(first.headers["X-Original-Height"])) == (
        1841,
        1955,
    )
    # The same pixels the checker saw (MONOCHROME1 inverted: bright = dense), only resized.
    reference = Image.fromarray(dicom_io.render(rg1_path).display).resize(
        img.size, Image.Resampling.BILINEAR
    )
    assert np.abs(np.asarray(img, dtype=float) - np.asarray(reference, dtype=float)).mean() < 2.0
    again = client.get(url, params={"size": 512}, headers=auth(integ))
    assert again.headers["X-Render-Cache"] == "hit" and again.content == first.content
    inverted = Image.open(
        io.BytesIO(
            client.get(url, params={"size": 512, "invert": True}, headers=auth(integ)).content
        )
    )
    assert np.abs(255 - np.asarray(inverted, dtype=float) - np.asarray(img, dtype=float)).max() <= 1
    windowed = client.get(
        url,
        params={"size": 256, "center": 2000, "width": 500, "format": "jpeg"},
        headers=auth(integ),
    )
    assert windowed.headers["content-type"] == "image/jpeg"
    assert (windowed.headers["X-Window-Center"], windowed.headers["X-Window-Width"]) == (
        "2000.0",
        "500.0",
    )
    auto = client.get(url, params={"size": 256, "preset": "high_contrast"}, headers=auth(integ))
    assert auto.headers["X-Window-Source"] == "percentile"
    assert_error_shape(
        client.get(url, params={"preset": "lung"}, headers=auth(integ)), 422, "invalid_input"
    )
    assert_error_shape(
        client.get(url, params={"center": 10}, headers=auth(integ)), 422, "invalid_input"
    )
    assert_error_shape(
        client.get(url, params={"size": 99999}, headers=auth(integ)), 422, "invalid_input"
    )
    assert_error_shape(
        client.get(f"{API}/instances/1.2.3/rendered", headers=auth(integ)), 404, "not_found"
    )


def test_oidc_id_tokens_map_to_local_users(
    settings: Settings, users: dict[str, str], tmp_path: Path
) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    jwks_url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    issuer = "https://idp.example.test/realms/radiology"
    oidc = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={
                    "oidc_issuer": issuer,
                    "oidc_audience": "radcheck",
                    "oidc_jwks_url": jwks_url,
                }
            )
        }
    )

    def token(**claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": issuer,
            "aud": "radcheck",
            "sub": "abc-123",
            "iat": now,
            "exp": now + 300,
            "preferred_username": "jdoe",
            **claims,
        }
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})

    with TestClient(create_app(oidc, run_worker=False)) as c:
        me = c.get(f"{API}/auth/me", headers=bearer(token()))
        assert me.status_code == 200, me.text
        assert me.json()["actor"] == "user:jdoe" and me.json()["kind"] == "oidc"
        assert c.get(f"{API}/auth/me", headers=bearer(token(aud="other"))).status_code == 401
        assert (
            c.get(f"{API}/auth/me", headers=bearer(token(exp=int(time.time()) - 100))).status_code
            == 401
        )
        stranger = c.get(
            f"{API}/auth/me", headers=bearer(token(sub="zzz", preferred_username="nobody"))
        )
        assert stranger.status_code == 401 and "radcheck user create" in stranger.json()["detail"]
    with TestClient(create_app(settings, run_worker=False)) as c:
        refused = c.get(f"{API}/auth/me", headers=bearer(token()))
        assert refused.status_code == 401 and "OIDC_ISSUER" in refused.json()["detail"]
    server.shutdown()
