"""Safe YAML that remembers where every value came from.

The C parser composes nodes (fast); we build plain dicts and lists from them
ourselves so that every key and value keeps its file:line:col, duplicate keys
are refused, and scalars follow YAML 1.2 core rules: only true/false are
booleans ("no" stays the string "no") and dates and times stay strings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .diagnostics import Diagnostic, Location

try:  # libyaml composes nodes in C; the pure-Python parser is the fallback
    from yaml._yaml import CParser as _Parser

    _NEEDS_COMPOSER = False
except ImportError:  # pragma: no cover
    from yaml.parser import Parser as _Parser  # type: ignore[assignment]

    _NEEDS_COMPOSER = True


class LDict(dict):
    """A mapping read from YAML. ``mark`` is where it starts; ``key_marks`` and
    ``value_marks`` say where each key and each value stand."""

    __slots__ = ("mark", "key_marks", "value_marks")

    def __init__(self, mark: Location):
        super().__init__()
        self.mark = mark
        self.key_marks: dict[Any, Location] = {}
        self.value_marks: dict[Any, Location] = {}


class LList(list):
    """A sequence read from YAML, with the location of each item."""

    __slots__ = ("mark", "item_marks")

    def __init__(self, mark: Location):
        super().__init__()
        self.mark = mark
        self.item_marks: list[Location] = []


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_NULL = "tag:yaml.org,2002:null"
# YAML 1.2 core schema, minus timestamps (dates stay strings): by first character.
_IMPLICIT: dict[str, list[tuple[str, re.Pattern]]] = {}
for _tag, _pattern, _firsts in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    (_NULL, r"^(?:~|null|Null|NULL)$", "~nN"),
):
    for _first in _firsts:
        _IMPLICIT.setdefault(_first, []).append((_tag, re.compile(_pattern)))


class _Resolver:
    """Tag resolution for the C composer, which calls these methods once per node;
    lean on purpose (it is most of the parsing time) and without path resolvers."""

    def descend_resolver(self, current_node, current_index):
        pass

    def ascend_resolver(self):
        pass

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode:
            if implicit[0]:
                if not value:
                    return _NULL
                for tag, pattern in _IMPLICIT.get(value[0], ()):
                    if pattern.match(value):
                        return tag
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


if _NEEDS_COMPOSER:  # pragma: no cover

    class _Composer(yaml.reader.Reader, yaml.scanner.Scanner, _Parser, yaml.composer.Composer, _Resolver):
        def __init__(self, stream):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            _Parser.__init__(self)
            yaml.composer.Composer.__init__(self)

else:

    class _Composer(_Parser, _Resolver):  # type: ignore[no-redef]
        pass


_FLOAT_SPECIAL = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, value = node.tag, node.value
    if tag == "tag:yaml.org,2002:str":
        return value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        if value.startswith("0x"):
            return int(value, 16)
        if value.startswith("0o"):
            return int(value[2:], 8)
        return int(value)
    if tag == "tag:yaml.org,2002:float":
        return _FLOAT_SPECIAL.get(value.lower()) or float(value)
    raise _Unsupported(node, f"the tag {tag!r} is not allowed", "remove the tag; campaignctl reads plain YAML only")


class _Unsupported(Exception):
    def __init__(self, node: yaml.Node, message: str, hint: str):
        super().__init__(message)
        self.node, self.message, self.hint = node, message, hint


class LoadResult:
    """The value of a YAML file (None when it could not be read) and its problems."""

    __slots__ = ("value", "diagnostics")

    def __init__(self, value: Any, diagnostics: list[Diagnostic]):
        self.value = value
        self.diagnostics = diagnostics


def load_text(text: str, file: str) -> LoadResult:
    """Parse one YAML document; never raises on bad input."""
    try:
        composer = _Composer(text)
        try:
            node = composer.get_single_node()
        finally:
            composer.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "malformed YAML"
        if "expected a single document" in str(exc.context or "") or "but found another document" in problem:
            return LoadResult(None, [Diagnostic(where, "yaml", "more than one YAML document in this file", "keep one document per file; remove the '---' separator")])
        return LoadResult(None, [Diagnostic(where, "yaml", problem, _yaml_hint(problem, _char_at(text, mark)))])
    except yaml.YAMLError as exc:  # reader errors: bad bytes, control characters
        return LoadResult(None, [Diagnostic(Location(file, 1, 1), "yaml", str(exc).splitlines()[0], "save the file as UTF-8 text")])
    if node is None:
        return LoadResult(None, [])
    diagnostics: list[Diagnostic] = []
    value = _build(node, file, diagnostics)
    return LoadResult(value, diagnostics)


def load_file(path: Path, display: str) -> LoadResult:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return LoadResult(None, [Diagnostic(Location(display, 1, 1), "yaml", f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the file as UTF-8")])
    except OSError as exc:
        return LoadResult(None, [Diagnostic(Location(display), "file", exc.strerror or str(exc), "check the path and permissions")])
    return load_text(text, display)


def _char_at(text: str, mark: Any) -> str:
    if mark is None:
        return ""
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    return line[mark.column] if mark.column < len(line) else ""


def _yaml_hint(problem: str, char: str = "") -> str:
    if char == "\t" or "'\\t'" in problem or "tab" in problem:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "a value containing ': ' must be quoted"
    if "could not find expected ':'" in problem:
        return "each key needs a ':' after it"
    if "found undefined alias" in problem:
        return "define the anchor (&name) before using it (*name)"
    return "fix the YAML syntax at this position"


def _mark(node: yaml.Node, file: str) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


_COLLECTION_TAGS = {"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


def _build(node: yaml.Node, file: str, diagnostics: list[Diagnostic]) -> Any:
    # Iterative would be faster still, but YAML nesting in projects is shallow.
    if isinstance(node, yaml.ScalarNode):
        try:
            return _scalar(node)
        except _Unsupported as exc:
            diagnostics.append(Diagnostic(_mark(node, file), "yaml", exc.message, exc.hint))
            return node.value
    if node.tag not in _COLLECTION_TAGS and not isinstance(node, yaml.ScalarNode):
        diagnostics.append(Diagnostic(_mark(node, file), "yaml", f"the tag {node.tag!r} is not allowed", "remove the tag; campaignctl reads plain YAML only"))
        return None
    if isinstance(node, yaml.SequenceNode):
        out = LList(_mark(node, file))
        for item in node.value:
            out.item_marks.append(_mark(item, file))
            out.append(_build(item, file, diagnostics))
        return out
    if isinstance(node, yaml.MappingNode):
        out = LDict(_mark(node, file))
        for key_node, value_node in node.value:
            key_mark = _mark(key_node, file)
            if not isinstance(key_node, yaml.ScalarNode):
                diagnostics.append(Diagnostic(key_mark, "yaml", "a key must be a plain value, not a list or mapping", "use a name as the key"))
                continue
            key = _build(key_node, file, diagnostics)
            if not isinstance(key, str):
                key = key_node.value  # keys are names: 2024 or true as a key still means the text
            if key in out:
                first = out.key_marks[key]
                diagnostics.append(
                    Diagnostic(key_mark, "yaml", f"duplicate key {key!r} (first defined at line {first.line})", "remove or rename one of them")
                )
                continue
            out.key_marks[key] = key_mark
            out.value_marks[key] = _mark(value_node, file)
            out[key] = _build(value_node, file, diagnostics)
        return out
    raise AssertionError(f"unknown YAML node {node!r}")  # pragma: no cover


def locate(root: Any, path: tuple | list, *, key: bool = False) -> Location | None:
    """The location of the value at ``path`` inside ``root`` (or of its key when
    ``key`` is true), falling back to the nearest located ancestor."""
    best: Location | None = getattr(root, "mark", None)
    node = root
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, LDict) and part in node:
            best = (node.key_marks if key and last else node.value_marks).get(part, best)
            node = node[part]
        elif isinstance(node, LList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_marks[part]
            node = node[part]
        else:
            break
        if not last and getattr(node, "mark", None) is not None and not isinstance(node, (LDict, LList)):
            break
    return best
