"""Offer bands: per quantile band of a customer feature, a threshold and an
amount that meet a DRR target (SCENARIOS.md campaign 7).

For each band of a ``quantile_bands`` feature (average check, basket depth,
frequency), from the band's own order history over the look-back:

- threshold = the band's average check x ``stretch`` (the offer asks a bit
  more than the band usually spends), rounded up to a round step (100 below
  1,000, 500 from there);
- amount = the largest multiple of 10 with amount / threshold <= target: a
  buyer who uses the offer checks out at least the threshold, so the offer's
  DRR is at most the target;
- forecast: the band's customers x their conversion within ``valid_days`` x
  the check under the offer (campaignctl.offers.terms), the same model plan
  uses. Messages are not included: they depend on the campaign's cascade, and
  plan adds them, so leave room under the policy limit.

The proposal is data (:class:`BandProposal`), printable as a table and
writable as an offers document that validates (:func:`offers_document`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model import Project
from .history import HistorySpec, load_history, segment_history
from .terms import buyer_value, half_up

if TYPE_CHECKING:
    from ..contracts import DataSource


@dataclass(frozen=True)
class BandOffer:
    band: str  # the band's label
    low: float | None  # the smallest feature value in the band
    high: float | None  # the largest
    customers: int
    average_check: float  # the band's average check in the look-back
    conversion: float  # share ordering within a window as long as the offer is valid
    threshold: int  # proposed min_check
    amount: int  # proposed fixed discount
    revenue: float  # customers x conversion x check under the offer
    cost: float  # customers x conversion x amount
    drr: float | None  # cost / revenue, rounded to 4 places

    @property
    def name(self) -> str:
        return re.sub(r"[^a-z0-9_]+", "_", str(self.band).lower()).strip("_") or "band"


@dataclass(frozen=True)
class BandProposal:
    feature: str
    target_drr: float
    stretch: float
    valid_days: int
    lookback_days: int
    now: datetime
    bands: tuple[BandOffer, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "target_drr": self.target_drr, "stretch": self.stretch, "valid_days": self.valid_days,
                "lookback_days": self.lookback_days, "now": self.now.isoformat(),
                "bands": [{**band.__dict__, "offer": offer_name(self.feature, band)} for band in self.bands]}


class BandsError(ValueError):
    """The feature cannot be banded (unknown, or not quantile_bands)."""


def propose_bands(project: Project, source: DataSource, feature: str, now: datetime, target_drr: float, *,
                  stretch: float = 1.25, valid_days: int = 14, lookback: timedelta = timedelta(days=365)) -> BandProposal:
    from ..segments.compiler import parse_project
    from ..segments.evaluate import evaluate_segments
    from ..segments.features import QuantileBands

    if not 0 < target_drr < 1:
        raise BandsError(f"the DRR target must be a share between 0 and 1 (0.15 is 15%), not {target_drr}")
    if stretch < 1:
        raise BandsError(f"--stretch must be at least 1 (a threshold below the usual check gives money away), not {stretch}")
    parsed = parse_project(project).features
    banded = sorted(name for name, definition in parsed.items() if isinstance(definition, QuantileBands))
    definition = parsed.get(feature)
    if not isinstance(definition, QuantileBands):
        what = "is not a quantile_bands feature" if feature in parsed else "is not a feature of the project"
        raise BandsError(f"{feature!r} {what}; offer bands works on: {', '.join(banded) or 'none (add a quantile_bands feature)'}")
    table = evaluate_segments(project, source, [], now=now, features=[feature]).features
    labels = table.column(feature).to_pylist()
    values = table.column(f"{feature}.value").to_pylist()
    ids = table.column("customer_id").to_numpy(zero_copy_only=False).astype(np.int64)
    band_of = np.array(labels, dtype=object)
    members = {label: ids[band_of == label] for label in definition.labels}
    spec = HistorySpec(lookback, timedelta(days=valid_days))
    banded_ids = ids[np.array([label is not None for label in labels], dtype=bool)] if len(ids) else ids
    history = load_history(project, source, [spec], banded_ids.tolist(), now)[spec]
    rows = []
    for label in definition.labels:
        in_band = [v for found, v in zip(labels, values) if found == label and v is not None]
        rows.append(_band(label, in_band, segment_history(history, members[label]), target_drr, stretch))
    return BandProposal(feature, target_drr, stretch, valid_days, lookback.days, now, tuple(rows))


def _band(label: Any, values: list[float], past, target: float, stretch: float) -> BandOffer:
    average = past.average_check
    wanted = float(average) * stretch
    step = 100 if wanted < 1000 else 500
    threshold = max(step, math.ceil(wanted / step) * step) if average else 0
    amount = int(Fraction(str(target)) * threshold // 10 * 10)
    buyer = buyer_value({"kind": "fixed_discount", "amount": amount, "min_check": threshold}, average, past.average_items)
    buyers = past.customers * past.conversion
    revenue, cost = half_up(buyers * buyer.check), half_up(buyers * buyer.incentive)
    return BandOffer(
        band=str(label), low=min(values) if values else None, high=max(values) if values else None, customers=past.customers,
        average_check=float(half_up(average)), conversion=float(half_up(past.conversion, 6)),
        threshold=threshold, amount=amount, revenue=float(revenue), cost=float(cost),
        drr=float(half_up(Fraction(cost) / Fraction(revenue), 4)) if revenue else None,
    )


def offer_name(feature: str, band: BandOffer) -> str:
    return f"{re.sub(r'[^a-z0-9_]+', '_', feature.lower())}_{band.name}"


def band_range(proposal: BandProposal, index: int) -> str:
    """"< 1,500", "1,500-2,000", "> 4,000": the band's feature values."""
    band = proposal.bands[index]
    if band.low is None:
        return "no customers"
    if index == 0:
        return f"< {band.high:,.0f}" if band.high >= 10 else f"< {band.high:,.2f}"
    if index == len(proposal.bands) - 1:
        return f"> {band.low:,.0f}" if band.low >= 10 else f"> {band.low:,.2f}"
    fmt = ",.0f" if band.high >= 10 else ",.2f"
    return f"{band.low:{fmt}}-{band.high:{fmt}}"


def offers_document(proposal: BandProposal, currency: str = "RUB") -> dict[str, Any]:
    """An offers document (schemas/v1/document.json) with one fixed_discount per band."""
    offers = {}
    for index, band in enumerate(proposal.bands):
        if not band.threshold or not band.amount:
            continue
        drr = f"{band.drr:.0%}" if band.drr is not None else "n/a"
        offers[offer_name(proposal.feature, band)] = {
            "description": (f"{proposal.feature} band {band.band} ({band_range(proposal, index)}): {band.amount:,} off from "
                            f"{band.threshold:,}; forecast DRR {drr} (campaignctl offer bands, target {proposal.target_drr:.0%})"),
            "title": f"{band.amount:,} {currency} off your purchase from {band.threshold:,} {currency}",
            "kind": "fixed_discount",
            "amount": band.amount,
            "min_check": band.threshold,
            "valid": {"days": proposal.valid_days},
        }
    return {"version": 1, "offers": offers}
