"""Issuing offers in apply, and exporting them: exactly once, like messages.

An offer is *issued* to (campaign, customer, offer) once, under the key
``campaign/customer/offer``: a promo code from the offer's pool
(``promo_codes``), or a bonus accrual (kind ``bonus_points``) for the loyalty
system. apply issues inside the transaction that reserves the ledger rows of
the messages carrying the offers (campaignctl.executor), so a crash leaves
both or neither: a code is never handed out twice (the state's ``promo_codes``
table holds a code once per pool, and a holder once) and never lost (the
message that carries it is in the ledger, and a later run renders it with the
same code, read back from state).

Then, before any message is sent, every issued offer a sink has not taken is
exported to it (:func:`export_offers`) and recorded per sink; a crash between
the sink's write and that record hands the same rows over again, which a sink
skips by key. So a customer never holds a code the point of sale does not know,
and a sink's copy equals the state's.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from .contracts import ExportedOffer, OfferSink
from .model import Offer, Project, PromoPool
from .state import IssuedOffer, StateStore

ISSUED = "issued"
ACCRUAL_KINDS = frozenset({"bonus_points"})  # credited when the message goes out: the loyalty system must hear of it
DEFAULT_VALID_DAYS = 14  # as campaignctl.executor.offer_context
EXPORT_BATCH = 20_000
# Terms of the offer a sink receives beside the code, as written in the offer.
TERMS = ("title", "amount", "percent", "max_amount", "min_check", "tiers", "points", "award", "max_share_of_check", "max_per_customer",
         "gift", "first_order_only", "channels", "categories", "exclude_categories", "weekdays")
_MAX_ROUNDS = 64  # proposals of generated codes before a pool is called full


class PoolExhausted(RuntimeError):
    """A pool has no code left for a holder (plan checks this first; a stale state can still get here)."""


class OfferExportError(RuntimeError):
    """An offer sink could not take a batch; nothing is sent until it does."""


def issue_key(campaign: str, customer_id: int | str, offer: str) -> str:
    return f"{campaign}/{customer_id}/{offer}"


def shared_holder(campaign: str, offer: str) -> str:
    """The holder of a code shared by a campaign's customers (per_customer: false)."""
    return f"{campaign}/*/{offer}"


def issues_offer(offer: Offer) -> bool:
    """Whether sending ``offer`` issues something: a promo code, or an accrual."""
    return bool(offer.spec.get("promo_codes")) or offer.kind in ACCRUAL_KINDS


def pool_of(offer: Offer) -> tuple[str, bool] | None:
    """(pool name, per customer) of an offer with promo codes, else None."""
    codes = offer.spec.get("promo_codes")
    if not codes:
        return None
    return codes["pool"], codes.get("per_customer", True) is not False


@dataclass(frozen=True)
class IssueRequest:
    """An offer a planned message carries: (campaign, customer, offer)."""

    campaign: str
    customer_id: str
    offer: str
    key: str  # issue_key(campaign, customer_id, offer)

    def holder(self, per_customer: bool) -> str:
        return self.key if per_customer else shared_holder(self.campaign, self.offer)


def requests_for(project: Project, messages: Iterable[Any]) -> list[IssueRequest]:
    """One request per (campaign, customer, offer) the messages carry (anything
    with ``campaign``, ``customer_id`` and ``offer``), in first-seen order."""
    found: dict[str, IssueRequest] = {}
    for m in messages:
        offer = project.offers.get(m.offer) if m.offer else None
        if offer is not None and issues_offer(offer):
            key = issue_key(m.campaign, m.customer_id, m.offer)
            if key not in found:
                found[key] = IssueRequest(m.campaign, str(m.customer_id), m.offer, key)
    return list(found.values())


# --------------------------------------------------------------------------- issuing


def issue_offers(store: StateStore, project: Project, messages: Iterable[Any], now: datetime) -> list[str]:
    """Issue what ``messages`` carry and was not issued before; returns the new
    keys. Call it inside ``store.atomically()`` with the messages' ledger rows."""
    requests = requests_for(project, messages)
    if not requests:
        return []
    issued = {o.key for o in store.issued_offers_by_key([r.key for r in requests])}
    todo = [r for r in requests if r.key not in issued]
    codes = _allocate_codes(store, project, todo)
    # Every customer of an offer gets the same terms and validity at one `now`: worked out once per offer.
    shared = {name: _issue_terms(project, name, now) for name in {r.offer for r in todo}}
    rows = [IssuedOffer(r.key, r.campaign, r.customer_id, r.offer, codes.get(r.key), now, ISSUED, *shared[r.offer]) for r in todo]
    return store.issue_offers(rows)


def _issue_terms(project: Project, name: str, now: datetime) -> tuple[str | None, datetime, dict[str, Any]]:
    """(pool, expires_at, terms) of offer ``name`` issued at ``now``."""
    from .planner.snapshot import plain  # not at the top: the planner imports this module

    offer = project.offers[name]
    pooled = pool_of(offer)
    pool = project.promo_pools[pooled[0]] if pooled else None
    valid_from, valid_until = validity(project, offer, pool, now)
    terms = {key: plain(offer.spec[key]) for key in TERMS if key in offer.spec}
    terms.update(kind=offer.kind, valid_from=valid_from.isoformat(), valid_until=valid_until.isoformat(),
                 max_uses=pool.max_uses if pool else None)
    return (pool.name if pool else None), _day_end(valid_until, project.timezone), terms


def _allocate_codes(store: StateStore, project: Project, requests: Sequence[IssueRequest]) -> dict[str, str]:
    """issue key -> code for every request whose offer has promo codes."""
    holders_by_pool: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in requests:
        pooled = pool_of(project.offers[r.offer])
        if pooled:
            holders_by_pool[pooled[0]][r.holder(pooled[1])].append(r.key)
    codes: dict[str, str] = {}
    for pool_name, holders in holders_by_pool.items():
        held = hold_codes(store, project.promo_pools[pool_name], list(holders))
        for holder, keys in holders.items():
            for key in keys:
                codes[key] = held[holder]
    return codes


def hold_codes(store: StateStore, pool: PromoPool, holders: Sequence[str]) -> dict[str, str]:
    """holder -> code for every holder: the code it holds already, or a new one
    from the pool. Raises PoolExhausted when the pool cannot serve them all."""
    if not holders:
        return {}
    if pool.source == "import":
        return _hold_imported(store, pool, holders)
    from .promocodes import generate_codes, pool_format

    fmt = pool_format(pool)
    held: dict[str, str] = {}
    missing = list(holders)
    for _ in range(_MAX_ROUNDS):
        # A proposal may collide with a code held earlier: those holders get a new proposal next round.
        held.update(store.hold_promo_codes(pool.name, dict(zip(missing, generate_codes(fmt, len(missing))))))
        missing = [h for h in missing if h not in held]
        if not missing:
            return held
    raise PoolExhausted(f"promo pool {pool.name!r}: no free code found for {len(missing):,} holder(s) after {_MAX_ROUNDS} tries")


def _hold_imported(store: StateStore, pool: PromoPool, holders: Sequence[str]) -> dict[str, str]:
    taken = store.promo_codes(pool.name)
    held = {h: taken[h] for h in holders if h in taken}
    missing = [h for h in holders if h not in held]
    if not missing:
        return held
    used = set(taken.values())
    free = [code for code in import_codes(pool) if code not in used]
    if len(free) < len(missing):
        raise PoolExhausted(f"promo pool {pool.name!r} has {len(free):,} code(s) left in {pool.file.name}, {len(missing):,} needed")
    held.update(store.hold_promo_codes(pool.name, dict(zip(missing, free))))
    if len(held) < len(holders):  # only under a second writer, which the apply lock rules out
        raise PoolExhausted(f"promo pool {pool.name!r}: codes taken while issuing; run apply again")
    return held


def import_codes(pool: PromoPool) -> list[str]:
    """The codes of an imported pool's file (read once per file version)."""
    stat = pool.file.stat()
    return list(_read_codes(pool.file, pool.column, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _read_codes(path: Path, column: str | None, mtime_ns: int, size: int) -> tuple[str, ...]:
    from .promocodes import read_code_file

    return tuple(read_code_file(path, column))


def validity(project: Project, offer: Offer, pool: PromoPool | None, now: datetime) -> tuple[date, date]:
    """(first, last valid day) of an offer issued at ``now``: the pool's
    ``expires``, else the offer's ``valid``, else 14 days; in the project's zone."""
    valid = dict((pool.expires if pool is not None else None) or offer.spec.get("valid") or {"days": DEFAULT_VALID_DAYS})
    if "days" in valid:
        today = now.astimezone(ZoneInfo(project.timezone)).date()
        return today, today + timedelta(days=int(valid["days"]))
    return date.fromisoformat(str(valid["from"])), date.fromisoformat(str(valid["to"]))


def _day_end(day: date, zone: str) -> datetime:
    """The first instant after ``day`` in the project's zone, in UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


def issued_codes(store: StateStore, project: Project, messages: Iterable[Any]) -> dict[str, str]:
    """issue key -> promo code, for the messages about to be rendered."""
    keys = [r.key for r in requests_for(project, messages)]
    return {o.key: o.code for o in store.issued_offers_by_key(keys) if o.code} if keys else {}


# --------------------------------------------------------------------------- exporting


_LIFTED = ("kind", "valid_from", "valid_until", "max_uses")  # kept in the terms column, fields of their own in an export


def exported(offer: IssuedOffer, _split: dict[int, tuple[Any, ...]] | None = None) -> ExportedOffer:
    """What a sink receives for an issued offer. ``_split`` caches the work per
    terms and timestamp object, which the rows of one offer read from state share."""
    split = _split.get(id(offer.terms)) if _split is not None else None
    if split is None or split[0] is not offer.terms:
        terms = dict(offer.terms)
        split = (offer.terms, *(terms.pop(name, None) for name in _LIFTED), terms)
        if _split is not None:
            _split[id(offer.terms)] = split
    _, kind, valid_from, valid_until, max_uses, rest = split
    issued_at = _split.get(id(offer.issued_at)) if _split is not None else None
    if issued_at is None or issued_at[0] is not offer.issued_at:
        issued_at = (offer.issued_at, offer.issued_at.astimezone(timezone.utc).isoformat())
        if _split is not None:
            _split[id(offer.issued_at)] = issued_at
    return ExportedOffer(
        offer.key, offer.campaign, offer.customer_id, offer.offer, kind or "", offer.code, offer.pool,
        issued_at[1], valid_from, valid_until, max_uses, rest,
    )


def export_offers(
    store: StateStore, sinks: Mapping[str, OfferSink], *, batch_size: int = EXPORT_BATCH, on_batch: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Hand every issued offer a sink has not taken to it, a batch at a time,
    recording each batch after the sink returns; sink -> offers exported now.
    Raises OfferExportError naming the sink when one fails."""
    counts = {}
    for name, sink in sinks.items():
        after, count = None, 0
        while rows := store.unexported_offers(name, after, batch_size):
            try:
                split: dict[int, tuple[Any, ...]] = {}
                sink.export([exported(row, split) for row in rows])
            except Exception as exc:  # noqa: BLE001 - a plugin's own error, shown with the sink's name
                raise OfferExportError(
                    f"offer sink {name!r} failed after exporting {count:,} offer(s) this run: {type(exc).__name__}: {exc}; "
                    "nothing was sent, run apply again once the sink works"
                ) from exc
            store.mark_offers_exported(name, [row.key for row in rows])
            after, count = rows[-1].key, count + len(rows)
            if on_batch:
                on_batch(name, count)
        counts[name] = count
    return counts


def sample_code(project: Project, offer_name: str | None) -> str | None:
    """A code shaped like the ones ``offer_name``'s pool issues (for previews
    and plan's template checks, so an SMS is counted at its real length), or
    None for an offer without promo codes."""
    offer = project.offers.get(offer_name) if offer_name else None
    pooled = pool_of(offer) if offer is not None else None
    if pooled is None:
        return None
    pool = project.promo_pools[pooled[0]]
    if pool.source == "import":
        codes = import_codes(pool)
        return max(codes, key=len) if codes else None
    from .promocodes import check_character

    body = pool.alphabet[-1] * pool.length
    return pool.prefix + body + (check_character(body, pool.alphabet) if pool.check else "")
