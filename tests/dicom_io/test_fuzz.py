"""Bounded, seeded fuzzing: byte-wise mutations of real files; only DicomIOError may escape."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

import dicom_io
from dicom_io import DicomIOError

from .conftest import corpus_file, make_dx

SEEDS = 300
SMALL_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "JPEG2000.dcm",
    "test-SR.dcm",
    "SC_rgb_small_odd_jpeg.dcm",
    "image_dfl.dcm",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: flip bytes, overwrite a run, truncate, delete a chunk, insert junk, poke a length."""
    buf = bytearray(data)
    op = rng.randrange(6)
    pos = rng.randrange(len(buf))
    if op == 0:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        buf[pos : pos + rng.randint(1, 64)] = bytes(
            rng.randrange(256) for _ in range(rng.randint(1, 64))
        )
    elif op == 2:
        del buf[pos:]
    elif op == 3:
        del buf[pos : pos + rng.randint(1, 256)]
    elif op == 4:
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    else:  # element lengths are the parser's weak spot: write a large or odd one
        buf[pos : pos + 4] = rng.choice(
            [b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x01\x00\x00\x00"]
        )
    return bytes(buf)


def _originals() -> list[bytes]:
    return [corpus_file(n).read_bytes() for n in SMALL_FILES] + [make_dx(pixels=None)]


def test_mutated_files_raise_only_dicom_io_errors() -> None:
    rng = random.Random(20241123)
    originals = _originals()
    outcomes = {"ok": 0, "error": 0}
    for _ in range(SEEDS):
        data = mutate(rng.choice(originals), rng)
        for decode in (False, True):
            try:
                dicom_io.read_instance(data, decode=decode)
                outcomes["ok"] += 1
            except DicomIOError:
                outcomes["error"] += 1
        with contextlib.suppress(DicomIOError):
            dicom_io.read_and_render(data)
    assert outcomes["error"] > 0 and outcomes["ok"] > 0  # the mutations bite, and not all fatally


def test_cli_survives_a_mutated_corpus_it_has_never_seen(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli.dicom import dicom_cli

    rng = random.Random(7)
    originals = _originals()
    files = []
    for i in range(40):
        path = tmp_path / f"mutated_{i}.dcm"
        path.write_bytes(mutate(rng.choice(originals), rng))
        files.append(str(path))
    result = CliRunner().invoke(dicom_cli, ["inspect", "--json", *files])
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output


@pytest.mark.parametrize("cut", [10, 132, 200, 400])
def test_every_early_truncation_is_a_dicom_io_error(cut: int) -> None:
    data = corpus_file("CT_small.dcm").read_bytes()[:cut]
    with pytest.raises(DicomIOError):
        dicom_io.read_instance(data)
