"""Tables the CLI prints stay readable at 80 columns and in pipes (issue #25 item 5)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from vigil.cli import output

pytestmark = pytest.mark.unit

JOB_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
COLUMNS = ("id", "model", "state", "attempt", "trigger", "datasets", "created", "reason")
ROWS = [
    (JOB_ID, "patient-risk-clf", "failed", "3/3", "dataset", ["patient-risk/v2", "patient-risk/v3"],
     "2025-06-02 10:41:07", "dataset file:///x.csv is outside the allowed dataset roots;\tnot retryable"),
    ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "m", "succeeded", "1/3", "cron", None, "2025-06-02 10:42:00", None),
]  # fmt: skip


def render(renderable: object, *, width: int, terminal: bool) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None, highlight=False)
    if not terminal:
        console.soft_wrap = True  # as output.console() does off a terminal
    console.print(renderable)
    return buffer.getvalue()


def test_a_wide_table_on_an_80_column_terminal_keeps_every_value_whole() -> None:
    text = render(output.table("jobs", COLUMNS, ROWS), width=80, terminal=True)
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert any(JOB_ID in line for line in lines)  # the id, whole, on one line
    assert any("patient-risk-clf" in line for line in lines)
    assert "outside the allowed dataset" in " ".join(" ".join(line.split()) for line in lines)
    assert any(line.split()[:2] == ["state", "failed"] for line in lines if line.strip())


def test_a_table_that_fits_is_a_table_with_its_ids_whole() -> None:
    rows = [(JOB_ID, "m", "succeeded"), ("x", "model-two", "failed")]
    lines = render(output.table("jobs", ("id", "model", "state"), rows), width=80, terminal=True).splitlines()
    header = next(line for line in lines if "model" in line)
    assert header.split() == ["id", "model", "state"]
    assert any(line.split() == [JOB_ID, "m", "succeeded"] for line in lines)
    wide = render(output.table("jobs", COLUMNS, ROWS), width=250, terminal=True).splitlines()
    assert any(line.split()[:3] == [JOB_ID, "patient-risk-clf", "failed"] for line in wide)


def test_in_a_pipe_a_table_is_plain_tab_separated_lines() -> None:
    text = render(output.table("jobs", COLUMNS, ROWS), width=80, terminal=False)
    lines = text.splitlines()
    assert lines[0] == "# jobs"
    assert lines[1].split("\t") == list(COLUMNS)
    first = lines[2].split("\t")
    assert first[0] == JOB_ID
    assert first[5] == "patient-risk/v2, patient-risk/v3"
    assert first[7] == "dataset file:///x.csv is outside the allowed dataset roots; not retryable"  # tab → space
    assert lines[3].split("\t")[5:] == ["-", "2025-06-02 10:42:00", "-"]
    assert len(lines) == 4
    assert "\x1b" not in text and "│" not in text and "┃" not in text


def test_fields_in_a_pipe_are_tab_separated_and_on_a_terminal_aligned() -> None:
    fields = output.pairs([("run", JOB_ID), ("params", "a=1 b=2"), ("finished", None)])
    assert render(fields, width=80, terminal=False).splitlines() == [f"run\t{JOB_ID}", "params\ta=1 b=2", "finished\t-"]
    lines = render(fields, width=80, terminal=True).splitlines()
    assert [line.split() for line in lines] == [["run", JOB_ID], ["params", "a=1", "b=2"], ["finished", "-"]]
