"""The feature library as typed data: what each kind computes and which parts
(``rfm.r``) a condition may compare. The SQL is in compiler.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..model import Feature
from .conditions import AGGREGATE_TABLES, Aggregate, Problems, parse_aggregate, parse_period

RFM_DIMENSIONS = {"r": "recency", "f": "frequency", "m": "monetary"}


@dataclass(frozen=True)
class Scoring:
    """How one RFM dimension becomes a score 1..n: quantile edges over the
    population, or fixed thresholds. Bins are closed on the right, so a value
    equal to an edge gets the lower bin, and equal values always share a score."""

    quantiles: int | None = None
    thresholds: tuple[float, ...] = ()

    @property
    def scores(self) -> int:
        return self.quantiles if self.quantiles else len(self.thresholds) + 1


@dataclass(frozen=True)
class FeatureDef:
    name: str

    # The parts a condition may compare: "" is the feature's own value.
    parts: tuple[str, ...] = ("",)


@dataclass(frozen=True)
class RFM(FeatureDef):
    period: tuple | None = None
    recency: Scoring = Scoring(5)
    frequency: Scoring = Scoring(5)
    monetary: Scoring = Scoring(5)
    groups: tuple[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], ...] = ()  # (label, ((letter, scores), ...))
    fallback: str | None = "others"
    parts: tuple[str, ...] = ("", "r", "f", "m", "recency", "frequency", "monetary")


@dataclass(frozen=True)
class Lifecycle(FeatureDef):
    new_days: int = 30
    default_cycle_days: float = 60
    min_orders: int = 2
    pre_churn: float = 1.5
    churn: float = 2.5
    deep_churn: float = 4.0
    parts: tuple[str, ...] = ("", "cycle_days")


@dataclass(frozen=True)
class QuantileBands(FeatureDef):
    value: Aggregate | None = None
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75)
    iqr: float | None = None
    positive_only: bool = False
    labels: tuple[Any, ...] = ()
    parts: tuple[str, ...] = ("", "value")


@dataclass(frozen=True)
class Value(FeatureDef):
    value: Aggregate | None = None


@dataclass(frozen=True)
class FavouriteCategory(FeatureDef):
    period: tuple | None = None


@dataclass(frozen=True)
class MainStore(FeatureDef):
    period: tuple | None = None


def parse_feature(feature: Feature, sink: list) -> FeatureDef | None:
    problems = Problems(feature.spec, f"features.{feature.name}", sink)
    spec = feature.spec
    kind = feature.kind or spec.get("kind")
    parser = _PARSERS.get(kind)
    if parser is None:
        problems.add(("kind",), f"unknown feature kind {kind!r}", f"use one of: {', '.join(_PARSERS)}")
        return None
    return parser(feature.name, spec, problems)


def _period(spec: Mapping, problems: Problems) -> tuple | None:
    return parse_period(spec["period"], ("period",), problems) if "period" in spec else None


def _number(spec: Mapping, key: str, default: float, problems: Problems, *, minimum: float = 0) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        problems.add((key,), f"{key} must be a number >= {minimum}")
        return default
    return value


def _scoring(spec: Any, path: tuple, problems: Problems) -> Scoring:
    if isinstance(spec, Mapping) and isinstance(spec.get("quantiles"), int) and spec["quantiles"] >= 2:
        return Scoring(quantiles=spec["quantiles"])
    thresholds = spec.get("thresholds") if isinstance(spec, Mapping) else None
    if isinstance(thresholds, list) and thresholds and all(isinstance(t, (int, float)) for t in thresholds):
        if list(thresholds) != sorted(set(thresholds)):
            problems.add(path + ("thresholds",), "thresholds must be increasing", "e.g. thresholds: [30, 60, 120, 240]")
        return Scoring(thresholds=tuple(thresholds))
    problems.add(path, "give {quantiles: N} (N >= 2) or {thresholds: [increasing numbers]}")
    return Scoring(5)


def _rfm(name: str, spec: Mapping, problems: Problems) -> RFM:
    dimensions = {key: _scoring(spec.get(key, {"quantiles": 5}), (key,), problems) for key in RFM_DIMENSIONS.values()}
    groups = []
    for label, rule in (spec.get("groups") or {}).items():
        if not isinstance(rule, Mapping) or not rule:
            problems.add(("groups", label), "a group maps r, f, m to the scores it takes", "e.g. {r: [4, 5], f: [4, 5]}")
            continue
        letters = []
        for letter, scores in rule.items():
            if letter not in RFM_DIMENSIONS:
                problems.add(("groups", label, letter), f"unknown score {letter!r}", "use r, f or m", key=True)
                continue
            scores = tuple(scores) if isinstance(scores, list) else (scores,)
            top = dimensions[RFM_DIMENSIONS[letter]].scores
            if not all(isinstance(s, int) and 1 <= s <= top for s in scores):
                problems.add(("groups", label, letter), f"{letter} scores run from 1 to {top}")
            letters.append((letter, scores))
        groups.append((label, tuple(letters)))
    return RFM(name, period=_period(spec, problems), recency=dimensions["recency"], frequency=dimensions["frequency"], monetary=dimensions["monetary"],
               groups=tuple(groups), fallback=spec.get("fallback", "others"))


def _lifecycle(name: str, spec: Mapping, problems: Problems) -> Lifecycle:
    thresholds = spec.get("thresholds") or {}
    values = {key: thresholds.get(key, default) for key, default in (("pre_churn", 1.5), ("churn", 2.5), ("deep_churn", 4.0))}
    if not values["pre_churn"] < values["churn"] < values["deep_churn"]:
        problems.add(("thresholds",), "thresholds must grow: pre_churn < churn < deep_churn")
    min_orders = spec.get("min_orders", 2)
    if not isinstance(min_orders, int) or min_orders < 2:
        # A cycle needs at least two purchase days to be measured.
        problems.add(("min_orders",), "min_orders must be an integer >= 2")
        min_orders = 2
    return Lifecycle(name, new_days=_number(spec, "new_days", 30, problems), default_cycle_days=_number(spec, "default_cycle_days", 60, problems, minimum=1),
                     min_orders=min_orders, **values)


def _value_aggregate(spec: Mapping, problems: Problems) -> Aggregate | None:
    value = spec.get("value")
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in AGGREGATE_TABLES:
        problems.add(("value",), "value is one aggregate: {orders|order_lines|events: {metric, of, filters}}")
        return None
    table = next(iter(value))
    aggregate, _ = parse_aggregate(table, value[table], ("value", table), problems, compared=False)
    return aggregate


def _quantile_bands(name: str, spec: Mapping, problems: Problems) -> QuantileBands:
    quantiles = spec.get("quantiles", [0.25, 0.5, 0.75])
    if not (isinstance(quantiles, list) and quantiles and all(isinstance(q, (int, float)) and 0 < q < 1 for q in quantiles)
            and list(quantiles) == sorted(set(quantiles))):
        problems.add(("quantiles",), "quantiles are increasing numbers between 0 and 1", "e.g. [0.25, 0.5, 0.75]")
        quantiles = [0.25, 0.5, 0.75]
    labels = tuple(spec.get("labels") or range(1, len(quantiles) + 2))
    if len(labels) != len(quantiles) + 1:
        problems.add(("labels",), f"{len(quantiles)} quantile edges make {len(quantiles) + 1} bands, but {len(labels)} labels are given")
    outliers = spec.get("outliers") or {}
    iqr = outliers.get("iqr")
    if iqr is not None and (isinstance(iqr, bool) or not isinstance(iqr, (int, float)) or iqr < 0):
        problems.add(("outliers", "iqr"), "iqr is a non-negative multiple, e.g. 1.5")
        iqr = None
    return QuantileBands(name, value=_value_aggregate(spec, problems), quantiles=tuple(quantiles), iqr=iqr,
                         positive_only=bool(spec.get("positive_only", False)), labels=labels)


def _value(name: str, spec: Mapping, problems: Problems) -> Value:
    return Value(name, value=_value_aggregate(spec, problems))


def _favourite_category(name: str, spec: Mapping, problems: Problems) -> FavouriteCategory:
    return FavouriteCategory(name, period=_period(spec, problems))


def _main_store(name: str, spec: Mapping, problems: Problems) -> MainStore:
    return MainStore(name, period=_period(spec, problems))


_PARSERS = {
    "rfm": _rfm,
    "lifecycle": _lifecycle,
    "quantile_bands": _quantile_bands,
    "value": _value,
    "favourite_category": _favourite_category,
    "main_store": _main_store,
}
