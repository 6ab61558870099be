"""What the CLI makes of its inputs before any call: dataset files, rollout steps, `why` targets, API errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from vigil.cli.client import error_detail
from vigil.cli.datafile import describe, infer_columns, parse_column, value_type, widen
from vigil.cli.deploy import parse_step
from vigil.cli.why import Target, glance, resolve

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------------------------ data files
def test_csv_facts_digest_columns_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_text("age,smoker,site,label,note\n54.5,true,a,1,\n61,false,b,0,x\n\n")
    facts = describe(path)
    assert facts.content_digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert facts.uri == path.resolve().as_uri()
    assert facts.row_count == 2  # the blank line is not a row
    assert {c["name"]: c["type"] for c in facts.columns} == {
        "age": "float",  # 54.5 and 61: int widened to float
        "smoker": "bool",
        "site": "string",
        "label": "int",
        "note": "string",
    }


def test_tsv_and_other_files(tmp_path: Path) -> None:
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\n1\t2.5\n")
    assert [c["type"] for c in describe(tsv).columns] == ["int", "float"]
    blob = tmp_path / "data.parquet"
    blob.write_bytes(b"\x00PAR1")
    facts = describe(blob, uri="s3://bucket/data.parquet")
    assert (facts.columns, facts.row_count, facts.uri) == ([], 0, "s3://bucket/data.parquet")


def test_a_csv_needs_a_header_naming_every_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,,c\n1,2,3\n")
    with pytest.raises(ValueError, match="name every column"):
        describe(path)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("3", "int"), ("-3", "int"), ("3.0", "float"), ("1e-3", "float"), ("TRUE", "bool"), ("x", "string")],
)
def test_value_type(text: str, kind: str) -> None:
    assert value_type(text) == kind


def test_widen_and_infer() -> None:
    assert widen(None, "int") == "int"
    assert widen("int", "float") == widen("float", "int") == "float"
    assert widen("int", "bool") == "string"
    columns, rows = infer_columns(["a", "b"], [["1", "x"], ["2"], []])
    assert (columns, rows) == ([{"name": "a", "type": "int"}, {"name": "b", "type": "string"}], 2)


def test_parse_column() -> None:
    assert parse_column(" age : float ") == {"name": "age", "type": "float"}
    for bad in ("age", ":float", "age:"):
        with pytest.raises(ValueError, match="name:type"):
            parse_column(bad)


# ------------------------------------------------------------------------------------------------ steps
@pytest.mark.parametrize(
    ("spec", "step"),
    [
        ("weight=20", {"kind": "set_weight", "weight": 20}),
        ("set_weight=100", {"kind": "set_weight", "weight": 100}),
        ("analysis", {"kind": "analysis"}),
        ("pause", {"kind": "pause"}),
        ("pause=30", {"kind": "pause", "duration_s": 30.0}),
        ("pause=1.5m", {"kind": "pause", "duration_s": 90.0}),
        ("pause=2h", {"kind": "pause", "duration_s": 7200.0}),
    ],
)
def test_parse_step(spec: str, step: dict[str, object]) -> None:
    assert parse_step(spec) == step


@pytest.mark.parametrize(
    "spec", ["weight=101", "weight=-1", "weight=x", "weight", "analysis=3", "pause=0", "pause=5d", "x"]
)
def test_bad_steps(spec: str) -> None:
    with pytest.raises(ValueError, match="step"):
        parse_step(spec)


# ------------------------------------------------------------------------------------------------ why targets
@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Target(event_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")),
        ("model/risk/3", Target(subject="model/risk/v3")),
        ("model/risk/v3", Target(subject="model/risk/v3")),
        ("model/risk", Target(subject="model/risk/alias/champion")),
        ("model/risk/alias/staging", Target(subject="model/risk/alias/staging")),
        ("deployment/api", Target(subject="deployment/api")),
        ("deployment/api/2", Target(subject="deployment/api/v2")),
        ("dataset/patients/07", Target(subject="dataset/patients/v7")),
        ("dataset/patients", Target(subject="dataset/patients")),
        ("job/0190abc", Target(job_id="0190abc")),
        ("model/risk/run/r-1", Target(subject="model/risk/run/r-1")),
    ],
)
def test_resolve(text: str, target: Target) -> None:
    assert resolve(text) == target


@pytest.mark.parametrize(
    ("text", "why"), [("a b", "neither"), ("model//3", "empty part"), ("model/x/latest", "version")]
)
def test_resolve_refuses(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        resolve(text)


def test_glance_picks_fields_and_breached_evidence() -> None:
    event = {
        "data": {
            "reason": "worse",
            "failed_version": 2,
            "digest": "sha256:…",
            "evidence": [
                {"statistic": "accuracy.drop", "value": 0.1234567, "breached": True},
                {"statistic": "psi", "value": 0.01, "breached": False},
            ],
        }
    }
    assert glance(event) == "reason=worse failed_version=2 breached: accuracy.drop=0.1235"
    assert glance({"data": None}) == ""


# ------------------------------------------------------------------------------------------------ API errors
@pytest.mark.parametrize(
    ("response", "line"),
    [
        (httpx.Response(404, json={"detail": "model 'x' does not exist"}), "model 'x' does not exist"),
        (
            httpx.Response(422, json={"detail": [{"loc": ["body", "version"], "msg": "Input should be ≥ 1"}]}),
            "version: Input should be ≥ 1",
        ),
        (httpx.Response(422, json={"detail": {"message": "gate failed", "gates": []}}), "gate failed"),
        (httpx.Response(502, text="Bad\n gateway"), "Bad gateway"),
    ],
)
def test_detail_is_one_line(response: httpx.Response, line: str) -> None:
    assert error_detail(response) == line
