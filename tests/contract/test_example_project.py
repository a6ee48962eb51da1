"""The issue's bar for segments: every segment of the example project, on the
demo retailer, has identical members on DuckDB, PostgreSQL and Spark."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from campaignctl.demo_data import generate_demo_data
from campaignctl.project import load_project
from campaignctl.segments import evaluate_segments

from .harness import SOURCES, open_source

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)
_MARKS = {"postgres": [pytest.mark.postgres], "spark": [pytest.mark.spark]}


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("example") / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl"))
    generate_demo_data(root / "data", 1500, seed=5, as_of=NOW)
    return root


def members(project_dir: Path, source) -> dict[str, list[int]]:
    audiences = evaluate_segments(load_project(project_dir), source, now=NOW)
    return {name: sorted(int(i) for i in ids) for name, ids in audiences.members.items()}


@pytest.fixture(scope="module")
def on_duckdb(project_dir, request) -> dict[str, list[int]]:
    source = open_source("duckdb", project_dir / "data", request)
    try:
        return members(project_dir, source)
    finally:
        source.close()


def test_the_example_segments_are_not_trivial(project_dir, on_duckdb):
    assert set(on_duckdb) == set(load_project(project_dir).segments)
    sizes = [len(ids) for ids in on_duckdb.values()]
    assert sum(1 for size in sizes if size > 0) >= len(sizes) - 2  # the demo retailer has members for nearly every segment


@pytest.mark.parametrize("name", [pytest.param(name, marks=_MARKS[name]) for name in SOURCES if name != "duckdb"])
def test_every_example_segment_has_the_same_members_on_every_source(project_dir, on_duckdb, name, request):
    source = open_source(name, project_dir / "data", request)
    try:
        found = members(project_dir, source)
    finally:
        source.close()
    different = {segment: (len(on_duckdb[segment]), len(found[segment])) for segment in on_duckdb if found[segment] != on_duckdb[segment]}
    assert different == {}, f"segments whose members differ from DuckDB (duckdb size, {name} size): {different}"
