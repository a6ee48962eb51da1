"""Random YAML and random mutations of the example project: validation always
answers with located diagnostics, never with a traceback."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaignctl.loader import load_text
from campaignctl.project import check_project

EXAMPLE = Path(__file__).resolve().parents[1] / "campaigns"
EXAMPLE_FILES = sorted(p.relative_to(EXAMPLE) for p in EXAMPLE.rglob("*.yaml") if "data" not in p.parts and "out" not in p.parts)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def plain(value: Any) -> Any:
    """Located containers as plain ones, so PyYAML can write them back."""
    if isinstance(value, dict):
        return {key: plain(child) for key, child in value.items()}
    if isinstance(value, list):
        return [plain(child) for child in value]
    return value


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, prefix + (index,))
    return found


def mutate(document: Any, path: tuple, operation: str, new_value: Any) -> Any:
    if not path:
        return new_value
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if operation == "delete":
        del parent[last]
    elif operation == "rename" and isinstance(parent, dict):
        parent[str(new_value)[:10] or "x"] = parent.pop(last)
    else:
        parent[last] = new_value
    return document


def assert_answers_cleanly(root: Path) -> None:
    result = check_project(root)  # must not raise
    if not result.ok:
        assert result.diagnostics
        for diagnostic in result.diagnostics:
            assert diagnostic.location.file and diagnostic.message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_random_text_as_a_document(text):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(EXAMPLE / "campaignctl.yaml", root / "campaignctl.yaml")
        (root / "random.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates make invalid UTF-8, on purpose
        assert_answers_cleanly(root)


@settings(max_examples=60, deadline=None)
@given(value=values)
def test_random_yaml_values_as_a_document(value):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(EXAMPLE / "campaignctl.yaml", root / "campaignctl.yaml")
        (root / "random.yaml").write_text(yaml.safe_dump({"version": 1, "segments": value}))
        assert_answers_cleanly(root)


@pytest.fixture(scope="module")
def example_copy(tmp_path_factory) -> Path:
    """One copy of the example project; each example mutates one file and puts it back."""
    root = tmp_path_factory.mktemp("fuzz") / "project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl"))
    return root


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_of_the_example_project(example_copy, data):
    relative = data.draw(st.sampled_from([Path("campaignctl.yaml"), *EXAMPLE_FILES]))
    original = (EXAMPLE / relative).read_text()
    document = plain(load_text(original, str(relative)).value)
    path = data.draw(st.sampled_from(paths(document)))
    operation = data.draw(st.sampled_from(["delete", "replace", "rename"]) if path else st.just("replace"))
    new_value = data.draw(values)
    mutated = mutate(document, path, operation, new_value)
    target = example_copy / relative
    target.write_text(yaml.safe_dump(mutated, allow_unicode=True))
    try:
        assert_answers_cleanly(example_copy)
    finally:
        target.write_text(original)
