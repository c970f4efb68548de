"""Corpus loaders on small files written here (a synthetic IU-shaped archive, CSV, JSONL, .txt)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from eval.corpora import IU_WHEEL_MEMBER, load_corpus, load_csv, load_iu, load_text_dir
from eval.errors import CorpusError
from tests.eval.conftest import IU_TGZ, write_reports_jsonl

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Cough.</AbstractText>
<AbstractText Label="FINDINGS">The lungs are clear.   No effusion.</AbstractText>
<AbstractText Label="IMPRESSION">Normal chest {n}.</AbstractText>
</Abstract></Article></MedlineCitation></eCitation>"""


def _tgz(path: Path, count: int) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for n in range(1, count + 1):
            data = IU_XML.format(n=n).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_iu_archive_is_streamed_into_records(tmp_path: Path) -> None:
    records = list(load_iu(_tgz(tmp_path / "r.tgz", 3)))
    assert [r.id for r in records] == ["CXR1", "CXR2", "CXR3"]
    first = records[0]
    assert first.findings == "The lungs are clear. No effusion."  # whitespace normalised
    assert first.impression == "Normal chest 1."
    assert (first.indication, first.comparison) == ("Cough.", "None.")


def test_iu_archive_inside_the_wheel(tmp_path: Path) -> None:
    tgz = _tgz(tmp_path / "r.tgz", 2)
    wheel = tmp_path / "torchxrayvision-1.5.7-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(tgz, IU_WHEEL_MEMBER)
    assert [r.id for r in load_corpus("iu", wheel)] == ["CXR1", "CXR2"]


def test_missing_iu_archive_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"pip download --no-deps torchxrayvision==1\.5\.7"):
        list(load_iu(tmp_path / "absent.tgz"))


def test_csv_loader(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        'id,findings,impression\na1,"Heart normal. No effusion.",Normal.\n,,Only imp.\n'
    )
    records = list(load_csv(path))
    assert records[0].id == "a1" and records[0].findings == "Heart normal. No effusion."
    assert records[1].id == "2" and records[1].findings is None
    bad = tmp_path / "bad.csv"
    bad.write_text("id,report\n1,x\n")
    with pytest.raises(CorpusError, match="needs a 'findings', 'impression' or 'text' column"):
        list(load_csv(bad))


def test_jsonl_loader(tmp_path: Path, records) -> None:
    path = write_reports_jsonl(tmp_path / "r.jsonl", records)
    loaded = list(load_corpus("jsonl", path))
    assert [r.id for r in loaded] == [r.id for r in records]
    assert loaded[5].header == {"patient_sex": "M", "view_position": "PA"}
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "findings": 3}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:1: field 'findings' must be a string"):
        list(load_corpus("jsonl", tmp_path / "bad.jsonl"))


def test_text_folder_loader(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("FINDINGS: Clear lungs.\nIMPRESSION: Normal.\n")
    (tmp_path / "sub" / "a.txt").write_text("IMPRESSION: Normal.\n")
    records = list(load_text_dir(tmp_path))
    assert [r.id for r in records] == ["b", "sub/a"]
    assert records[0].text is not None and records[0].findings is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no \.txt files"):
        list(load_text_dir(tmp_path / "empty"))


def test_unknown_corpus_kind(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="unknown corpus kind 'xml'"):
        load_corpus("xml", tmp_path)


@pytest.mark.skipif(not IU_TGZ.is_file(), reason="needs ../shared/data/iu_xray")
def test_real_iu_archive_counts() -> None:
    records = list(load_iu(IU_TGZ))
    assert len(records) == 3955
    assert len({r.id for r in records}) == 3955
    assert sum(1 for r in records if r.findings) == 3425
