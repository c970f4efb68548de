"""``radcheck model init-tiny`` + ``run``: fresh checkpoint, deterministic output, JSON, slicing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from app.cli.model import AI_LABEL, ALL_INTERFACES, API_KEY_ENV, model_cli, serve_security
from app.settings import ModelServerSettings
from tests.medvlm.test_runtime_helpers import network_guard, offline_guard

__all__ = ["offline_guard"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    with network_guard():
        yield _make_files(tmp_path_factory)


def _make_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    image = root / "film.png"
    rng = np.random.default_rng(11)
    Image.fromarray(rng.integers(0, 256, size=(900, 700), dtype=np.uint8)).save(image)
    model = root / "tiny"
    result = CliRunner().invoke(model_cli, ["init-tiny", str(model)])
    assert result.exit_code == 0, result.output
    assert (model / "model.safetensors").is_file()
    return {"image": image, "model": model}


def _run(files: dict[str, Path], *extra: str) -> str:
    args = ["run", "--model", str(files["model"]), "--image", str(files["image"])]
    result = CliRunner().invoke(
        model_cli, [*args, "--max-new-tokens", "6", "--device", "cpu", *extra]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_run_twice_gives_identical_labelled_output(files: dict[str, Path]) -> None:
    first = _run(files, "--reason", "cough  and\nfever")
    assert first == _run(files, "--reason", "cough  and\nfever")
    assert first.startswith(f"[{AI_LABEL}]")
    assert "tokens: prompt" in first and "(visual 1369), output 6" in first
    assert "slicing: off" in first


def test_run_json_with_slices(files: dict[str, Path]) -> None:
    payload = json.loads(_run(files, "--json", "--slices", "on", "--no-timings"))
    assert payload["label"] == AI_LABEL
    assert payload["output_tokens"] == 6
    assert payload["slicing_plan"]["sliced"] is True
    assert payload["visual_tokens"] == payload["budget"]["visual_tokens"] <= 1500
    assert payload["provenance"]["prompt_template_id"] == "vicuna_v1"


def test_run_reports_a_bad_checkpoint_clearly(files: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        model_cli,
        ["run", "--model", str(tmp_path), "--image", str(files["image"]), "--device", "cpu"],
    )
    assert result.exit_code == 2
    assert "config.json" in result.stderr and "is missing" in result.stderr


def test_serve_refuses_a_named_but_unset_key_variable_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_MODEL_KEY", raising=False)
    result = CliRunner().invoke(
        model_cli, ["serve", "--model", str(tmp_path), "--api-key-env", "MY_MODEL_KEY"]
    )
    assert result.exit_code == 2
    assert "MY_MODEL_KEY is not set or empty" in result.stderr


def test_serve_refuses_a_short_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "short")
    result = CliRunner().invoke(model_cli, ["serve", "--model", str(tmp_path)])
    assert result.exit_code == 2
    assert "fewer than 16" in result.stderr and "short" not in result.stderr.split("16")[-1]


def test_serve_without_a_key_binds_loopback_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="app.cli.model"):
        assert serve_security(None, 8001, None) == ("127.0.0.1", None)
        assert serve_security("::1", 8001, None) == ("::1", None)
    assert "UNAUTHENTICATED" in caplog.text


@pytest.mark.parametrize("host", [ALL_INTERFACES, "10.0.0.5", "::", "gpu-node.example"])
def test_serve_without_a_key_refuses_any_other_interface(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=f"refusing to serve the model on {host}:8001 without"):
        serve_security(host, 8001, None)
    # RadCheck keys authenticate every request, so they allow another interface
    assert serve_security(host, 8001, None, radcheck_keys=True) == (host, None)


def test_serve_command_refuses_0_0_0_0_without_a_key_before_loading_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    result = CliRunner().invoke(
        model_cli, ["serve", "--model", str(tmp_path / "absent"), "--host", ALL_INTERFACES]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve the model on 0.0.0.0")
    assert f"set {API_KEY_ENV}" in lines[0]


def test_serve_key_from_the_default_or_a_named_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "a-random-enough-key-0123456789"
    monkeypatch.setenv(API_KEY_ENV, key)
    with caplog.at_level(logging.INFO, logger="app.cli.model"):
        assert serve_security(None, 8001, None) == (ALL_INTERFACES, key)
        assert serve_security("10.0.0.5", 8001, None) == ("10.0.0.5", key)
    assert "UNAUTHENTICATED" not in caplog.text and key not in caplog.text
    monkeypatch.setenv("OTHER_KEY", key[::-1])
    assert serve_security(None, 8001, "OTHER_KEY") == (ALL_INTERFACES, key[::-1])


def test_the_model_server_rule_is_validated_by_its_settings() -> None:
    # The CLI only reads ModelServerSettings; the rule holds for anyone who builds one.
    key = SecretStr("a-random-enough-key-0123456789")
    assert ModelServerSettings().bind == "127.0.0.1"
    assert ModelServerSettings(api_key=key).bind == ALL_INTERFACES
    assert ModelServerSettings(host="10.0.0.5", radcheck_keys=True).bind == "10.0.0.5"
    with pytest.raises(ValidationError, match=r"refusing to serve the model on 10\.0\.0\.5:8001"):
        ModelServerSettings(host="10.0.0.5")
    with pytest.raises(ValidationError, match="has 5 characters, fewer than 16"):
        ModelServerSettings(api_key=SecretStr("short"))


def test_run_passes_quantization_to_the_runtime(files: dict[str, Path]) -> None:
    args = ["run", "--model", str(files["model"]), "--image", str(files["image"])]
    result = CliRunner().invoke(model_cli, [*args, "--device", "cpu", "--quantization", "nf4"])
    assert result.exit_code == 2
    assert "NF4 quantization runs on CUDA only" in result.stderr
