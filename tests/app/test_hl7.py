"""HL7 v2 ORU^R01 intake: mapping, the MLLP listener over real loopback sockets, matching reports
and studies in both orders, versions by result status, and the status routes (SQLite and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import logging
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.api import create_app
from app.db.migrate import upgrade
from app.db.models import CheckJob, Hl7Message, JobStatus, Report, Study
from app.db.session import Database
from app.services.oru import Hl7RejectError, decode_message, parse_oru
from app.services.report_intake import IntakeConfig, receive_message
from app.settings import Settings
from tests.app.conftest import auth, make_settings
from tests.app.hl7_support import (
    BIRTH_DATE,
    FINDINGS_LINE,
    IMPRESSION_LINE,
    PATIENT_ID,
    PATIENT_ID_2,
    PATIENT_NAME,
    Client,
    all_succeeded,
    dicom_bytes,
    ingest,
    jobs_of,
    make_worker,
    msa,
    new_accession,
    oru_v23,
    oru_v251,
    run_worker_until,
    running_listener,
)


def counts(db: Database) -> tuple[int, int, int]:
    with db.session() as session:
        return (
            session.scalar(select(func.count(Hl7Message.id))) or 0,
            session.scalar(select(func.count(Report.id))) or 0,
            session.scalar(select(func.count(CheckJob.id))) or 0,
        )


def reports_of(db: Database) -> list[Report]:
    with db.session() as session:
        return list(session.scalars(select(Report).order_by(Report.version)).all())


# --- mapping (no sockets) -------------------------------------------------------------------


def test_v251_vendor_message_is_mapped_with_escapes_undone() -> None:
    uid = "1.2.826.0.1.3680043.8.498.12345"
    report = parse_oru(
        decode_message(oru_v251(control_id="M1", accession="A-1", status="P", study_uid=uid))
    )
    assert (report.accession_number, report.study_instance_uid) == ("A-1", uid)
    assert report.result_status == "P" and report.header.version == "2.5.1"
    assert report.patient_ids == (PATIENT_ID, PATIENT_ID_2)
    assert report.text.splitlines() == [
        "INDICATION:",
        "Dyspnoea & cough.",
        "FINDINGS:",
        "Heart size is normal.",
        f"{FINDINGS_LINE}.",
        "Ratio 0.5|0.6 cm^2 (sic) A line.",
        "IMPRESSION:",
        f"{IMPRESSION_LINE}.",
    ]


def test_v23_vendor_message_takes_status_from_obx_and_accession_from_obr18() -> None:
    data = oru_v23(control_id="M2", accession="A-2", status="C")
    report = parse_oru(decode_message(data.replace(b"\n", b"\r")))
    assert report.result_status == "C" and report.header.version == "2.3"
    assert report.accession_number == "A-2" and report.study_instance_uid is None
    assert report.patient_ids == (PATIENT_ID, "ALT778", PATIENT_ID_2)
    assert "FINDINGS:\nThe heart size is normal." in report.text
    # OBR-18 as the configured accession field: this message has none there.
    with pytest.raises(Hl7RejectError, match=r"No accession number in OBR-18"):
        parse_oru(decode_message(data), accession_field="OBR-18")
    moved = data.replace(b"OBR|1||A-2|CXR2V^CHEST 2 VIEWS^L", b"OBR|1|||CXR2V" + b"|" * 14 + b"A-2")
    assert parse_oru(decode_message(moved), accession_field="OBR-18").accession_number == "A-2"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda m: m.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01"),
            r"ADT\^A01 \(MSH-9\) is not supported",
        ),
        (
            lambda m: m.replace(b"|P|2.5.1|", b"|P|2.6|"),
            r"version '2.6' \(MSH-12\) is not supported",
        ),
        (lambda m: m.replace(b"|CR|F\r", b"|CR|Q\r"), r"Result status 'Q'"),
        (
            lambda m: b"\r".join(s for s in m.split(b"\r") if not s.startswith(b"OBR")),
            r"No OBR segment",
        ),
    ],
)
def test_unusable_messages_are_rejected_with_a_reason(mutate: object, reason: str) -> None:
    data = oru_v251(control_id="M3", accession="A-3")
    with pytest.raises(Hl7RejectError, match=reason):
        parse_oru(decode_message(mutate(data)))  # type: ignore[operator]


# --- the listener over loopback ---------------------------------------------------------------


def test_several_messages_on_one_connection_each_a_version_with_its_status(
    settings: Settings,
) -> None:
    accession = new_accession()
    data, study_uid = dicom_bytes(accession)
    ingest(settings, data)
    with running_listener(settings) as (address, db):
        client = Client(address)
        acks = [
            client.send(oru_v251(control_id="C-1", accession=accession, status="P")),
            client.send(oru_v23(control_id="C-2", accession=accession, status="F")),
            client.send(
                oru_v251(control_id="C-3", accession=accession, status="C", study_uid=study_uid)
            ),
        ]
        client.close()
    assert [msa(a)[1:3] for a in acks] == [["AA", "C-1"], ["AA", "C-2"], ["AA", "C-3"]]
    assert "Stored as report version 1" in msa(acks[0])[3]
    rows = reports_of(db)
    assert [(r.version, r.result_status) for r in rows] == [(1, "P"), (2, "F"), (3, "C")]
    assert rows[0].findings is not None and FINDINGS_LINE in rows[0].findings
    assert rows[0].impression == f"{IMPRESSION_LINE}."
    assert rows[0].indication == "Dyspnoea & cough."
    db2 = Database(settings.database_url)
    with db2.session() as session:
        messages = session.scalars(select(Hl7Message)).all()
        # Once matched, the message row keeps no patient identifiers and no report text.
        assert all(m.patient_ids is None and m.report_text is None for m in messages)
        assert {m.state for m in messages} == {"matched"}
    assert [j.report.version for j in jobs_of(db2)] == [1, 2, 3]
    db2.dispose()


def test_concurrent_connections_for_one_study_each_store_a_version(settings: Settings) -> None:
    """Four RIS connections at once, all for the same study: every message AA, no deadlock, no
    version number twice (PostgreSQL stores them concurrently; SQLite one at a time)."""
    accession = new_accession()
    ingest(settings, dicom_bytes(accession)[0])
    results: dict[str, str] = {}

    def sender(address: tuple[str, int], prefix: str) -> None:
        client = Client(address)
        for i in range(5):
            results[f"{prefix}{i}"] = msa(
                client.send(oru_v251(control_id=f"{prefix}{i}", accession=accession))
            )[1]
        client.close()

    with running_listener(settings) as (address, db):
        threads = [threading.Thread(target=sender, args=(address, f"T{t}-")) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert len(results) == 20 and set(results.values()) == {"AA"}
    assert [r.version for r in reports_of(db)] == list(range(1, 21))
    assert counts(db) == (20, 20, 20)


def test_duplicate_control_id_stores_one_version(settings: Settings) -> None:
    accession = new_accession()
    ingest(settings, dicom_bytes(accession)[0])
    message = oru_v251(control_id="DUP-1", accession=accession)
    with running_listener(settings) as (address, db):
        client = Client(address)
        first, second = client.send(message), client.send(message)
        client.close()
        other = Client(address)  # a re-send on a new connection, as after a lost ACK
        third = other.send(message)
        other.close()
        # A re-send with a new timestamp is still the same message; a reused MSH-10 is not.
        other = Client(address)
        resent = other.send(message.replace(b"20261202101500+0100", b"20261202101533+0100"))
        reused = other.send(message.replace(IMPRESSION_LINE.encode(), b"Something else"))
        other.close()
    assert [msa(a)[1] for a in (first, second, third, resent)] == ["AA"] * 4
    assert "Duplicate" in msa(second)[3] and "Duplicate" in msa(third)[3]
    assert (
        msa(reused)[1] == "AR"
        and "MSH-10 was already used by a different message" in msa(reused)[3]
    )
    assert counts(db) == (1, 1, 1)


def test_report_before_images_is_matched_and_checked_once(settings: Settings) -> None:
    accession = new_accession()
    data, study_uid = dicom_bytes(accession)
    with running_listener(settings) as (address, db):
        client = Client(address)
        ack = client.send(oru_v251(control_id="EARLY-1", accession=accession))
        client.close()
        assert msa(ack)[1] == "AA" and "waiting for the study's images" in msa(ack)[3]
        assert counts(db) == (1, 0, 0)
        with db.session() as session:
            waiting = session.scalars(select(Hl7Message)).one()
            assert waiting.state == "waiting" and waiting.patient_ids == [PATIENT_ID, PATIENT_ID_2]
        worker = make_worker(settings, db)
        worker.run_once()  # nothing to match yet
        assert counts(db) == (1, 0, 0)
        ingest(settings, data)
        run_worker_until(worker, all_succeeded(db, 1))
        for _ in range(3):  # further sweeps and polls change nothing
            worker.run_once()
    jobs = jobs_of(db)
    assert len(jobs) == 1 and jobs[0].status == JobStatus.SUCCEEDED
    assert [(r.version, r.result_status) for r in reports_of(db)] == [(1, "F")]
    with db.session() as session:
        row = session.scalars(select(Hl7Message)).one()
        study = session.scalars(select(Study)).one()
        assert row.state == "matched" and row.patient_ids is None and row.report_text is None
        assert study.study_instance_uid == study_uid and row.study_id == study.id


def test_images_before_report_is_checked_once(settings: Settings) -> None:
    accession = new_accession()
    ingest(settings, dicom_bytes(accession)[0])
    with running_listener(settings) as (address, db):
        client = Client(address)
        assert msa(client.send(oru_v23(control_id="LATE-1", accession=accession)))[1] == "AA"
        client.close()
        worker = make_worker(settings, db)
        run_worker_until(worker, all_succeeded(db, 1))
        for _ in range(3):
            worker.run_once()
    assert len(jobs_of(db)) == 1
    assert counts(db) == (1, 1, 1)


def test_waiting_preliminary_and_final_get_one_check_of_the_final(settings: Settings) -> None:
    accession = new_accession()
    data, _ = dicom_bytes(accession)
    with running_listener(settings) as (address, db):
        client = Client(address)
        client.send(oru_v251(control_id="PF-1", accession=accession, status="P"))
        client.send(oru_v251(control_id="PF-2", accession=accession, status="F"))
        client.close()
        ingest(settings, data)
        worker = make_worker(settings, db)
        run_worker_until(worker, all_succeeded(db, 1))
    assert [(r.version, r.result_status) for r in reports_of(db)] == [(1, "P"), (2, "F")]
    jobs = jobs_of(db)
    assert len(jobs) == 1 and jobs[0].report.version == 2


def test_corrected_report_is_a_new_version_and_rechecked(settings: Settings) -> None:
    accession = new_accession()
    ingest(settings, dicom_bytes(accession)[0])
    with running_listener(settings) as (address, db):
        worker = make_worker(settings, db)
        client = Client(address)
        assert msa(client.send(oru_v251(control_id="F-1", accession=accession)))[1] == "AA"
        run_worker_until(worker, all_succeeded(db, 1))
        corrected = oru_v251(
            control_id="C-1", accession=accession, status="C", impression="Right effusion."
        )
        ack = client.send(corrected)
        client.close()
        assert msa(ack)[1] == "AA" and "version 2" in msa(ack)[3]
        run_worker_until(worker, all_succeeded(db, 2))
    rows = reports_of(db)
    assert [(r.version, r.result_status) for r in rows] == [(1, "F"), (2, "C")]
    assert rows[1].impression == "Right effusion."
    assert [j.report.version for j in jobs_of(db)] == [1, 2]


def test_cancelled_report_is_recorded_without_a_check(settings: Settings) -> None:
    accession = new_accession()
    ingest(settings, dicom_bytes(accession)[0])
    message = oru_v251(control_id="X-1", accession=accession, status="X")
    cancel = b"\r".join(s for s in message.split(b"\r") if not s.startswith(b"OBX"))
    with running_listener(settings) as (address, db):
        client = Client(address)
        ack = client.send(cancel)
        client.close()
    assert msa(ack)[1] == "AA" and "Cancellation recorded" in msa(ack)[3]
    assert counts(db) == (1, 0, 0)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            oru_v251(control_id="R-1", accession="X").replace(
                b"ORU^R01^ORU_R01", b"ORM^O01^ORM_O01"
            ),
            "ORM^O01 (MSH-9) is not supported",
        ),
        (
            oru_v251(control_id="R-2", accession="X").replace(b"|P|2.5.1|", b"|P|2.2|"),
            "version '2.2'",
        ),
        (
            oru_v23(control_id="R-3", accession="X").replace(b"OBR|1||X|", b"OBR|1||X|\rOBR|2||Y|"),
            "2 different accession numbers",
        ),
        (
            b"\r".join(
                s
                for s in oru_v251(control_id="R-4", accession="X").split(b"\r")
                if not s.startswith(b"OBX")
            ),
            "no report text",
        ),
    ],
)
def test_rejected_messages_get_ar_with_reason_and_store_nothing(
    sqlite_settings: Settings, message: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running_listener(sqlite_settings) as (address, db):
        client = Client(address)
        ack = client.send(message)
        # The connection stays usable after an AR.
        ok = client.send(oru_v251(control_id="OK-1", accession=new_accession()))
        client.close()
    fields = msa(ack)
    assert fields[1] == "AR" and reason in fields[3].replace("\\S\\", "^")
    assert any(s.startswith("ERR") for s in ack.split("\r"))
    assert msa(ok)[1] == "AA"
    assert counts(db) == (1, 0, 0)  # only the good message (waiting for its study)
    assert "-> AR (rejected)" in caplog.text


def test_patient_mismatch_is_rejected_and_nothing_stored(settings: Settings) -> None:
    accession = new_accession()
    ingest(settings, dicom_bytes(accession, patient_id="SOMEONE-ELSE")[0])
    with running_listener(settings) as (address, db):
        client = Client(address)
        ack = client.send(oru_v251(control_id="PM-1", accession=accession))
        client.close()
    assert msa(ack)[1] == "AR" and "do not include the Patient ID" in msa(ack)[3]
    assert counts(db) == (0, 0, 0)


def test_processing_error_is_answered_ae_and_nothing_stored(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A database without the HL7 table (schema behind the code): AE, the sender retries."""
    from pathlib import Path

    settings = make_settings(Path(str(tmp_path)) / "old")
    upgrade(settings.database_url, "0002")
    db = Database(settings.database_url)
    result = receive_message(
        db, oru_v251(control_id="AE-1", accession="A"), config=IntakeConfig(), source="mllp"
    )
    assert result.code == "AE" and "send the message again later" in result.text
    ack = result.ack()
    assert "MSA|AE|AE-1|" in ack and "ERR|||207^Application internal error^HL70357" in ack
    with db.session() as session:
        assert session.scalar(select(func.count(Report.id))) == 0
    db.dispose()
    assert "not stored (OperationalError); answered AE" in caplog.text


def test_wrong_framing_drops_the_connection(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running_listener(sqlite_settings) as (address, db):
        client = Client(address)
        client.send_raw(oru_v251(control_id="NF-1", accession="A"))  # no MLLP start byte
        assert client.closed_by_peer()
        client.close()
        # A frame that holds no HL7 message at all.
        client = Client(address)
        client.send_raw(b"\x0bHELLO WORLD\x1c\x0d")
        assert client.closed_by_peer()
        client.close()
        # A start byte inside a message: the previous frame was never ended.
        client = Client(address)
        client.send_raw(
            b"\x0bMSH|^~\\&|A\r\x0b" + oru_v251(control_id="NF-2", accession="A") + b"\x1c\x0d"
        )
        assert client.closed_by_peer()
        client.close()
    assert counts(db) == (0, 0, 0)
    assert "expected the MLLP start byte 0x0B, got 0x4D" in caplog.text
    assert "is not an HL7 v2 message" in caplog.text
    assert "a new start byte 0x0B inside a message" in caplog.text


def test_oversized_message_gets_ar_and_the_connection_closes(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    big = oru_v251(control_id="BIG-1", accession="A").replace(
        FINDINGS_LINE.encode(), FINDINGS_LINE.encode() * 200
    )
    with running_listener(sqlite_settings, max_message_bytes=4096) as (address, db):
        client = Client(address)
        client.send_raw(b"\x0b" + big)  # the end block never needs to arrive
        ack = client.read_ack()
        assert client.closed_by_peer()
        client.close()
    assert msa(ack)[1:3] == ["AR", "BIG-1"] and "larger than 4096 bytes" in msa(ack)[3]
    assert counts(db) == (0, 0, 0)
    assert "exceeds the limit of 4096" in caplog.text


def test_idle_and_half_sent_connections_time_out(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running_listener(sqlite_settings, idle_timeout_s=0.3) as (address, db):
        client = Client(address)
        client.send_raw(b"\x0b" + oru_v251(control_id="HALF-1", accession="A")[:80])
        assert client.closed_by_peer()
        client.close()
        idle = Client(address)
        assert idle.closed_by_peer()
        idle.close()
    assert counts(db) == (0, 0, 0)
    assert "no end of message (0x1C 0x0D) within 0.3 s" in caplog.text
    assert "idle for 0.3 s; connection closed" in caplog.text


def test_peers_outside_the_allow_list_are_refused(
    sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with running_listener(sqlite_settings, allowed_peers=("10.0.0.0/8",)) as (address, db):
        client = Client(address)
        with contextlib.suppress(OSError):  # the listener may already have closed it
            client.send_raw(b"\x0b" + oru_v251(control_id="P-1", accession="A") + b"\x1c\x0d")
        assert client.closed_by_peer()
        client.close()
    assert counts(db) == (0, 0, 0)
    assert "refused: not in RADCHECK_HL7__ALLOWED_PEERS" in caplog.text


def test_no_phi_in_listener_logs(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """Every kind of message and failure, with DEBUG logging on: no identifier or report text."""
    caplog.set_level(logging.DEBUG)
    accession = new_accession()
    data, _ = dicom_bytes(accession)
    with running_listener(settings, max_message_bytes=4096) as (address, db):
        client = Client(address)
        client.send(oru_v251(control_id="PHI-1", accession=accession))
        client.send(oru_v251(control_id="PHI-1", accession=accession))
        client.send(oru_v23(control_id="PHI-2", accession=accession, status="C"))
        client.send(
            oru_v251(control_id="PHI-3", accession=accession).replace(b"|P|2.5.1|", b"|P|2.9|")
        )
        client.send(
            oru_v251(control_id="PHI-4", accession=accession).replace(b"\\.br\\", b"\\Zbogus\\")
        )
        client.close()
        client = Client(address)
        client.send_raw(oru_v251(control_id="PHI-5", accession=accession))
        assert client.closed_by_peer()
        client.close()
        ingest(settings, data)
        run_worker_until(make_worker(settings, db), all_succeeded(db, 1))
    assert "PHI-1" in caplog.text  # the log is there, and names messages by MSH-10
    for secret in (
        PATIENT_ID,
        PATIENT_ID_2,
        PATIENT_NAME.split("^")[0],
        "QUINTILLA",
        BIRTH_DATE,
        accession,
        FINDINGS_LINE,
        IMPRESSION_LINE,
        "Dyspnoea",
    ):
        assert secret not in caplog.text, secret


# --- status routes ----------------------------------------------------------------------------


def test_status_routes_list_waiting_reports_and_studies(
    settings: Settings, keys: dict[str, str]
) -> None:
    early, late = new_accession(), new_accession()
    ingest(settings, dicom_bytes(late)[0])
    db = Database(settings.database_url)
    receive_message(
        db, oru_v251(control_id="W-1", accession=early), config=IntakeConfig(), source="file"
    )
    db.dispose()
    with TestClient(create_app(settings, run_worker=False)) as client:
        reports = client.get("/api/v1/intake/reports-waiting", headers=auth(keys["radiologist"]))
        studies = client.get("/api/v1/intake/studies-waiting", headers=auth(keys["integration"]))
        anonymous = client.get("/api/v1/intake/reports-waiting")
    assert reports.status_code == 200 and studies.status_code == 200
    assert anonymous.status_code == 401
    body = reports.json()
    assert body["total"] == 1
    item = body["items"][0]
    assert (item["accession_number"], item["state"], item["result_status"]) == (
        early,
        "waiting",
        "F",
    )
    assert item["control_id"] == "W-1" and item["source"] == "file"
    assert "patient_ids" not in item and "report_text" not in item
    assert [s["accession_number"] for s in studies.json()["items"]] == [late]
