"""Deterministic assignment (holdout, control, arms), campaign versions and
idempotency keys. docs/plan.md gives the formulas for offline recomputation;
keep the two in step.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from ..model import Project
from .snapshot import canonical_json, plain

HOLDOUT, CONTROL, TREATMENT = "holdout", "control", "treatment"
ARM_SALT_SUFFIX = "#arms"
DEFINITION_FORMAT = 1


# SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
# generators", OOPSLA 2014; the constants of Vigna's reference splitmix64.c):
# the golden-ratio increment and the two multipliers of its output mix.
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX_1 = 0xBF58476D1CE4E5B9
MIX_2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1
_U53 = 2.0**-53  # (z >> 11) has 53 bits: exactly representable, and so is the product


@lru_cache(maxsize=4096)
def assignment_key(salt: str, campaign: str) -> int:
    """The 64-bit seed of a (salt, campaign) pair: the first 8 bytes of
    sha256("{salt}/{campaign}") as a big-endian integer. Different campaigns
    (and salts) get unrelated seeds, so their draws are independent."""
    return int.from_bytes(hashlib.sha256(f"{salt}/{campaign}".encode("utf-8")).digest()[:8], "big")


def assignment(salt: str, campaign: str, customer_id: int) -> float:
    """A uniform number in [0, 1): the ``customer_id``-th output of SplitMix64
    seeded with :func:`assignment_key`, top 53 bits / 2**53 (docs/plan.md):

        z = (key + customer_id * 0x9E3779B97F4A7C15) mod 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) mod 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) mod 2**64
        z = z ^ (z >> 31)
        u = (z >> 11) / 2**53

    ``customer_id`` is an integer (a negative one wraps mod 2**64)."""
    if not isinstance(customer_id, (int, np.integer)):
        raise TypeError(f"customer_id must be an integer, not {type(customer_id).__name__} ({customer_id!r}): "
                        "the draw multiplies the id as a number (docs/plan.md)")
    z = (assignment_key(salt, campaign) + int(customer_id) * GOLDEN_GAMMA) & _MASK
    z = ((z ^ (z >> 30)) * MIX_1) & _MASK
    z = ((z ^ (z >> 27)) * MIX_2) & _MASK
    z ^= z >> 31
    return (z >> 11) * _U53


def assignments(salt: str, campaign: str, customer_ids: np.ndarray) -> np.ndarray:
    """:func:`assignment` for many customers at once (float64, the same values
    bit for bit): the planner draws for every eligible customer of every
    campaign. numpy's uint64 arithmetic wraps mod 2**64, as the formula does;
    an int64 id is reinterpreted as uint64, which is the id mod 2**64."""
    ids = np.ascontiguousarray(customer_ids, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = ids * np.uint64(GOLDEN_GAMMA)
        z += np.uint64(assignment_key(salt, campaign))
        shifted = z >> np.uint64(30)
        z ^= shifted
        z *= np.uint64(MIX_1)
        np.right_shift(z, np.uint64(27), out=shifted)
        z ^= shifted
        z *= np.uint64(MIX_2)
        np.right_shift(z, np.uint64(31), out=shifted)
        z ^= shifted
        z >>= np.uint64(11)
    return z.astype(np.float64) * _U53


GROUPS = (TREATMENT, CONTROL, HOLDOUT)  # the names of group codes 0, 1, 2


def group_codes(project_name: str, campaign: str, customer_ids: np.ndarray, *, holdout: float, control: float) -> np.ndarray:
    """:func:`group_of` for many customers, as codes into :data:`GROUPS` (int8)."""
    codes = np.zeros(len(customer_ids), dtype=np.int8)
    if control > 0:
        codes[assignments(project_name, campaign, customer_ids) < control] = GROUPS.index(CONTROL)
    if holdout > 0:
        codes[assignments(project_name, "", customer_ids) < holdout] = GROUPS.index(HOLDOUT)
    return codes


def groups_of(project_name: str, campaign: str, customer_ids: np.ndarray, *, holdout: float, control: float) -> np.ndarray:
    """:func:`group_of` for many customers: an array of HOLDOUT, CONTROL and TREATMENT."""
    return np.array(GROUPS, dtype=object)[group_codes(project_name, campaign, customer_ids, holdout=holdout, control=control)]


def arms_of(project_name: str, campaign: str, customer_ids: np.ndarray, arms: Sequence[tuple[str, float]]) -> np.ndarray:
    """:func:`arm_of` for many customers: an array of arm names (None without arms)."""
    if not arms:
        return np.full(len(customer_ids), None, dtype=object)
    weights = np.array([weight for _, weight in arms], dtype=np.float64)
    u = assignments(project_name + ARM_SALT_SUFFIX, campaign, customer_ids) * weights.sum()
    # The first arm whose cumulative weight exceeds u, as arm_of walks them.
    index = np.minimum(np.searchsorted(np.cumsum(weights), u, side="right"), len(arms) - 1)
    return np.array([name for name, _ in arms], dtype=object)[index]


def group_of(project_name: str, campaign: str, customer_id: int, *, holdout: float, control: float) -> str:
    """holdout when assignment(project, "", id) < holdout (the same for every
    campaign); else control when assignment(project, campaign, id) < control;
    else treatment."""
    if holdout > 0 and assignment(project_name, "", customer_id) < holdout:
        return HOLDOUT
    if control > 0 and assignment(project_name, campaign, customer_id) < control:
        return CONTROL
    return TREATMENT


def arm_of(project_name: str, campaign: str, customer_id: int, arms: Sequence[tuple[str, float]]) -> str | None:
    """The first arm whose cumulative weight share exceeds
    assignment(project + "#arms", campaign, id); arms in the order written."""
    if not arms:
        return None
    total = sum(weight for _, weight in arms)
    u = assignment(project_name + ARM_SALT_SUFFIX, campaign, customer_id) * total
    cumulative = 0.0
    for name, weight in arms:
        cumulative += weight
        if u < cumulative:
            return name
    return arms[-1][0]  # only reachable through float rounding at the top end


# --------------------------------------------------------------------------- versions


def campaign_definition(project: Project, name: str) -> dict[str, Any]:
    """Everything that decides what a campaign sends, as plain JSON: its own spec,
    the cascade (or message), the segments it reads (transitively) and the
    features they use, the offers and templates it can send, with the sha256 of
    every template file. Descriptions are left out: rewording one is not a new
    version. This is what state records per version, and what ``continue``
    runs old enrollments from."""
    campaign = project.campaigns[name]
    spec = _without_forecast(_strip(plain(campaign.spec)))
    if campaign.cascade:
        cascade = _strip(plain(project.cascades[campaign.cascade].spec))
    else:
        cascade = {"steps": [spec["message"]]}
    segments: dict[str, Any] = {}
    features: dict[str, Any] = {}
    roots = [campaign.audience, *campaign.exclude]
    trigger = spec.get("trigger") or {}
    if "segment_entry" in trigger:
        roots.append(trigger["segment_entry"])
    for segment in roots:
        _collect_segment(project, segment, segments, features)
    offers = {spec["offer"]} if spec.get("offer") else set()
    offers |= {arm["offer"] for arm in spec.get("arms", ()) if arm.get("offer")}
    offers |= {step["offer"] for step in cascade["steps"] if step.get("offer")}
    templates = set()
    for step in cascade["steps"]:
        if step.get("template"):
            templates.add(step["template"])
        templates |= set((step.get("templates") or {}).values())
    return {
        "format": DEFINITION_FORMAT,
        "campaign": spec,
        "cascade": cascade,
        "segments": {key: segments[key] for key in sorted(segments)},
        "features": {key: features[key] for key in sorted(features)},
        "offers": {key: _without_forecast(_strip(plain(project.offers[key].spec))) for key in sorted(offers) if key in project.offers},
        "templates": {key: _template(project, key) for key in sorted(templates) if key in project.templates},
    }


def definition_version(definition: Mapping[str, Any]) -> str:
    """The first 12 hex digits of sha256 of the definition's canonical JSON."""
    return hashlib.sha256(canonical_json(definition).encode()).hexdigest()[:12]


def campaign_versions(project: Project) -> dict[str, tuple[str, dict[str, Any]]]:
    """campaign -> (version, definition) for every campaign of the project."""
    found = {}
    for name in sorted(project.campaigns):
        definition = campaign_definition(project, name)
        found[name] = (definition_version(definition), definition)
    return found


def _without_forecast(spec: dict[str, Any]) -> dict[str, Any]:
    # Forecast overrides change what plan predicts, not what is sent: tuning
    # them must not make a new version (and stop or migrate enrollments).
    return {key: value for key, value in spec.items() if key != "forecast"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items() if key != "description"}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def _collect_segment(project: Project, name: str, segments: dict, features: dict) -> None:
    if name in segments or name not in project.segments:
        return
    where = _strip(plain(project.segments[name].where))
    segments[name] = where
    for kind, value in _walk(where):
        if kind == "segment" and isinstance(value, str):
            _collect_segment(project, value, segments, features)
        elif kind == "feature" and isinstance(value, dict) and isinstance(value.get("name"), str):
            feature = value["name"].split(".", 1)[0]
            if feature in project.features and feature not in features:
                features[feature] = _strip(plain(project.features[feature].spec))


def _walk(value: Any):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _template(project: Project, name: str) -> dict[str, Any]:
    template = project.templates[name]
    files = {}
    for part, path in sorted(template.files.items()):
        files[part] = _file_digest(Path(path))
    return {"spec": _strip(plain(template.spec)), "files": files}


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


# --------------------------------------------------------------------------- idempotency keys


def window_of(kind: str, entered_at: datetime, project_timezone: str) -> str:
    """The window part of a message key: the broadcast or run date (project
    time zone) for broadcast and recurring campaigns, the entry instant (UTC,
    to the second) for triggered ones."""
    if kind in ("broadcast", "recurring"):
        return entered_at.astimezone(ZoneInfo(project_timezone)).date().isoformat()
    return entered_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def message_key(campaign: str, version: str, customer_id: int, step: int, window: str) -> str:
    return f"{campaign}/{version}/{customer_id}/{step}/{window}"
