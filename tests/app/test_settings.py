"""PACS node, listener and DICOMweb settings: validated at start-up with messages naming the fix."""

from __future__ import annotations

import json

import pytest

from app.settings import SettingsError, load_settings


def test_nodes_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = [
        {"name": "orthanc", "dicomweb_url": "http://orthanc:8042/dicom-web", "username": "u",
         "password": "p", "ae_title": "ORTHANC", "host": "orthanc", "port": 4242},
        {"name": "legacy", "ae_title": "OLDPACS", "host": "10.0.0.5", "port": 104},
    ]  # fmt: skip
    monkeypatch.setenv("RADCHECK_PACS__NODES", json.dumps(nodes))
    monkeypatch.setenv("RADCHECK_LISTENER__ALLOWED_CALLING_AES", '["ORTHANC", "STORESCU"]')
    monkeypatch.setenv("RADCHECK_LISTENER__ALLOWED_PEERS", '["127.0.0.1", "10.0.0.0/8"]')
    settings = load_settings()
    orthanc = settings.pacs.node("orthanc")
    assert orthanc is not None and orthanc.retrieve_method == "dicomweb"
    assert orthanc.password is not None and orthanc.password.get_secret_value() == "p"
    legacy = settings.pacs.node("legacy")
    assert legacy is not None and legacy.has_dimse and legacy.retrieve_method == "c-get"
    assert settings.pacs.node("nope") is None
    assert settings.listener.allowed_calling_aes == ["ORTHANC", "STORESCU"]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([{"name": "x"}], "needs a dicomweb_url, or ae_title \\+ host \\+ port"),
        ([{"name": "x", "host": "h"}], "DIMSE needs all of ae_title, host and port"),
        ([{"name": "x", "dicomweb_url": "ftp://h"}], "RADCHECK_PACS__NODES__0__DICOMWEB_URL"),
        (
            [{"name": "x", "dicomweb_url": "http://h"}, {"name": "x", "dicomweb_url": "http://i"}],
            "repeated: x",
        ),
        (
            [{"name": "x", "dicomweb_url": "http://h", "retrieve": "c-move"}],
            "retrieve 'c-move' needs ae_title",
        ),
        ([{"name": "x", "ae_title": "WAY TOO LONG AE TITLE", "host": "h", "port": 1}], "AE_TITLE"),
    ],
)
def test_bad_nodes_refused(monkeypatch: pytest.MonkeyPatch, nodes: object, message: str) -> None:
    monkeypatch.setenv("RADCHECK_PACS__NODES", json.dumps(nodes))
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_bad_peer_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADCHECK_LISTENER__ALLOWED_PEERS", '["not-an-address"]')
    with pytest.raises(SettingsError, match=r"RADCHECK_LISTENER__ALLOWED_PEERS.*not an IP address"):
        load_settings()
