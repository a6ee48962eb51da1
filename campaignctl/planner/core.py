"""plan(): a pure function of (project, audiences, state, now, facts) -> Plan.

No I/O except reading the project's template files for campaign versions
(pass ``versions`` to avoid even that), no clock, no randomness; every
collection is walked in sorted order, so equal inputs give equal plans.
"""

from __future__ import annotations

import gc
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from ..arrays import sorted_union, unique_small
from ..contracts import address_fingerprint
from ..facts import CONTACT_FOR_KIND, NO_TIME, CustomerFacts, event_lookback, from_micros, reach_reasons, to_micros
from ..model import Project
from ..offers.history import CustomerHistory, HistorySpec
from ..segments.evaluate import Audiences
from ..sms import SmsEstimate
from . import economics, gate, promo, sms_parts
from .cascades import Flow, Step, condition_holds, goal_reached, reach_of, resolve_channel, unless_happened
from .forecast import Forecast
from .hashing import CONTROL, GROUPS, HOLDOUT, TREATMENT, arms_of, campaign_versions, group_codes, message_key, window_of
from .plan import (
    CHANGE,
    CREATE,
    DEFER,
    ENTER,
    EXIT,
    FORMAT_VERSION,
    MIGRATE,
    REMOVE,
    SEND,
    SKIP,
    STOP,
    UNCHANGED,
    CampaignAudience,
    CampaignChange,
    Deferral,
    EnrollmentAction,
    HeldBack,
    MessageAction,
    Plan,
    Rows,
    Violation,
)
from .snapshot import ACTIVE, SnapshotEnrollment, StateSnapshot
from .triggers import ENTRY_GRACE, entering, entries, may_enter, parse_at

UTC = timezone.utc
EXITED, COMPLETED = "exited", "completed"
_EPSILON = 1e-9


def _us(duration: timedelta) -> int:
    return duration // timedelta(microseconds=1)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True), quick when all are equal (one
    entry instant for a whole broadcast, say)."""
    if len(values) and bool((values == values[0]).all()):
        return values[:1], np.zeros(len(values), dtype=np.int64)
    return np.unique(values, return_inverse=True)


@dataclass
class _Row:
    """An enrollment being worked on: starts as state has it (or new), ends as
    the EnrollmentAction apply will write."""

    campaign: str
    version: str
    customer_id: int
    group: str
    arm: str | None
    step: int
    status: str
    entered_at: datetime
    next_step_at: datetime | None
    exit_reason: str | None
    entries: int
    last_message_key: str | None
    action: str | None = None  # None: untouched

    @classmethod
    def of(cls, e: SnapshotEnrollment) -> "_Row":
        return cls(e.campaign, e.version, e.customer_id, e.group, e.arm, e.step, e.status, e.entered_at,
                   e.next_step_at, e.exit_reason, e.entries, e.last_message_key)

    def mark(self, action: str) -> None:
        # An entry or a migration stays the headline when later steps also happen in this plan.
        if self.action not in (ENTER, MIGRATE, STOP):
            self.action = action

    def exit(self, reason: str, action: str = EXIT) -> None:
        self.status, self.next_step_at, self.exit_reason = EXITED, None, reason
        self.mark(action)

    def advance(self, flow: Flow, base: datetime, action: str) -> None:
        self.step += 1
        self.next_step_at = flow.next_due(self.step, base)
        if self.next_step_at is None:
            self.status = COMPLETED
        self.mark(action)

    def result(self) -> EnrollmentAction:
        return EnrollmentAction(self.action or SKIP, self.campaign, self.version, self.customer_id, self.group, self.arm,
                                self.step, self.status, self.entered_at, self.next_step_at, self.exit_reason,
                                self.entries, self.last_message_key)


@dataclass
class _Candidate:
    row: _Row
    flow: Flow
    step: Step
    channel: str
    template: str
    cost: float
    key: str


def _by_arm(flow: Flow, arms: np.ndarray, chosen: np.ndarray) -> Iterator[tuple[str | None, np.ndarray]]:
    """(arm, which of ``chosen`` are in it) for each arm among the chosen, in order
    of first appearance. Most campaigns have no arms: listing their column of
    None to find that out took ~0.08 s of a plan at 1M customers."""
    if not flow.arms:
        if chosen.any():
            yield None, chosen
        return
    for arm in dict.fromkeys(arms[chosen].tolist()):
        yield arm, chosen & (arms == arm)


def _pick(values: Sequence, codes: np.ndarray) -> list:
    """``[values[code] for code in codes]``, the same objects, by numpy from the
    few values: the Python loop took ~0.1 s over a plan's messages at 1M."""
    table = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):  # one by one: a tuple would be taken for a row of values
        table[index] = value
    return table[codes].tolist()


@dataclass
class _Block:
    """The gate's candidates of one campaign at one priority, ordered by customer."""

    campaign: str
    customers: np.ndarray
    channels: np.ndarray  # codes of planner.channel_names
    costs: np.ndarray
    flows: list[Flow]
    flow_slot: np.ndarray  # the flow of each candidate (rows from state may run an old version)
    objects: list[_Candidate]  # the one-by-one candidates
    order: np.ndarray  # where each candidate came from: objects first, then the entrants'
    entrant: np.ndarray  # the entrant index of each candidate, -1 for objects
    entrants: _Entrants | None


@dataclass(frozen=True)
class _Answers:
    """One of few answers per candidate: ``answers[which[index]]``, without a
    list as long as the candidates (most of them share one answer)."""

    answers: list
    which: np.ndarray

    def __getitem__(self, index: int):
        return self.answers[self.which[index]]


# What the gate decided for a candidate message.
SENT, DEFERRED, OVER_BUDGET, CAPPED = 0, 1, 2, 3


@dataclass
class _Entrants:
    """The customers entering one campaign in this plan, as columns: most of a
    plan's rows. Each is walked and gated like a :class:`_Row` (which rows from
    state, and the one-by-one reference path, still use), a step at a time for
    all of them."""

    flow: Flow
    ids: np.ndarray  # int64, sorted
    at: np.ndarray  # entry instants, µs since the epoch
    groups: np.ndarray  # object: treatment | control | holdout
    treated: np.ndarray  # bool: groups == treatment
    arms: np.ndarray  # object: arm name or None
    entries: np.ndarray  # int64: entries so far, this one included
    reach: np.ndarray  # int64: reach class (planner.reach_classes)
    step: np.ndarray  # int64: the next step to run
    due: np.ndarray  # int64 µs: next_step_at, NO_TIME for none
    status: np.ndarray  # object: active | exited | completed
    exit_reason: np.ndarray  # object
    option: np.ndarray  # int64: the message due now (planner.options), -1 for none
    last_message_key: np.ndarray  # object: the key of the message this plan sends, else None


def held_by_state(state: StateSnapshot, facts: CustomerFacts) -> dict[tuple[int, str], str]:
    """(customer, channel kind) -> the rule that keeps them off that kind, from
    what state recorded: an unsubscribe (for good), or an address the provider
    said is gone (held back as "address_invalid" while the customer's address on
    that kind is still that one, or when state did not keep which one it was).
    An unsubscribe wins."""
    held = {(int(c), kind): "address_invalid" for c, kind, gone in state.address_invalid if gone is None or gone == _address_now(facts, int(c), kind)}
    held.update(((int(c), kind), "unsubscribed") for c, kind in state.unsubscribed)
    return held


def _address_now(facts: CustomerFacts, customer_id: int, kind: str) -> str | None:
    fact = facts.get(customer_id)
    if fact is None:
        return None
    return address_fingerprint(fact.contacts.get(CONTACT_FOR_KIND.get(kind, "")))


class _Planner:
    def __init__(self, project: Project, audiences: Audiences, state: StateSnapshot, now: datetime,
                 facts: CustomerFacts, versions: Mapping[str, tuple[str, Mapping[str, Any]]], sms: Sequence[SmsEstimate] = (),
                 one_by_one: bool = False):
        self.project, self.audiences, self.state, self.now, self.facts = project, audiences, state, now, facts
        self.tz = project.timezone
        self.policies = project.policies
        self.versions = versions
        self.flows = {name: Flow.from_definition(name, version, definition) for name, (version, definition) in sorted(versions.items())}
        self.sms = sms
        self.flows = sms_parts.price_flows(self.flows, sms)
        self.enrolled: dict[str, dict[int, SnapshotEnrollment]] = defaultdict(dict)
        for e in sorted(state.enrollments, key=lambda e: (e.campaign, e.customer_id)):
            self.enrolled[e.campaign][int(e.customer_id)] = e
        self.unsubscribed = held_by_state(state, facts)
        self.outcomes = state.outcomes
        self.rows: dict[tuple[str, int], tuple[_Row, Flow]] = {}
        self.held: Counter = Counter()
        self.candidates: list[_Candidate] = []
        self.violations: list[Violation] = []
        self.old_flows: dict[tuple[str, str], Flow | None] = {}
        self.lookback = event_lookback(project)
        self._assigned: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._group_counts: dict[str, dict[str, int]] = {}
        self.kinds = tuple(sorted({channel.kind for channel in project.channels.values()}))
        self._reach: dict[int, tuple] = {}
        self._resolved: dict[tuple[int, tuple], tuple[str, str, float] | str] = {}
        self.one_by_one = one_by_one
        self.channel_names = tuple(sorted(project.channels))
        self._deferrals: dict[tuple, tuple[datetime, str] | None] = {}
        self._moments: dict[int, datetime] = {}
        self.entrants: dict[str, _Entrants] = {}
        self.object_messages: list[MessageAction] = []  # the gate's, for rows one by one
        self.object_enrollments: list[EnrollmentAction] = []
        self.options: list[tuple[str, str, float]] = []  # (channel, template, cost) of a step's message
        self.option_index: dict[tuple[str, str, float], int] = {}
        self.reasons: list[str] = []  # why a step was held back
        self.reason_index: dict[str, int] = {}

    # ------------------------------------------------------------------ per-customer facts, memoised

    def reach_key(self, customer_id: int) -> tuple:
        """Everything that decides which channels reach a customer (per channel
        kind: unsubscribed, address gone, no contact or consent, or reachable): customers
        with equal keys resolve every step to the same channel."""
        row = self.facts.row_of(customer_id)
        if row >= 0 and customer_id not in self.held_customers:
            return self.reach_keys[self.reach_codes[row]]
        key = self._reach.get(customer_id)
        if key is None:
            key = self._reach[customer_id] = reach_of(self.facts.get(customer_id), self.unsubscribed, customer_id, self.kinds)
        return key

    @cached_property
    def reach_codes(self) -> np.ndarray:
        return self.facts.reach_rows(self.kinds)

    @cached_property
    def reach_keys(self) -> dict[int, tuple]:
        """Reach code -> the reach key it stands for (for customers state holds nothing against)."""
        return {int(code): reach_reasons(int(code), self.kinds) for code in np.unique(self.reach_codes)}

    @cached_property
    def held_customers(self) -> frozenset[int]:
        return frozenset(customer_id for customer_id, _ in self.unsubscribed)

    @cached_property
    def zones(self) -> tuple[np.ndarray, tuple[str | None, ...]]:
        """(a time zone code per facts row, the zone each code stands for)."""
        return self.facts.timezone_rows()

    @cached_property
    def inactive_rows(self) -> np.ndarray:
        return self.facts.inactive_rows(self.now, self.policies.suppress_inactive_days)

    def resolve(self, step: Step, customer_id: int) -> tuple[str, str, float] | str:
        """resolve_channel, computed once per step and reach key."""
        key = self.reach_key(customer_id)
        memo = (id(step), key)
        if memo not in self._resolved:
            self._resolved[memo] = resolve_channel(self.project, step, dict(zip(self.kinds, key)))
        return self._resolved[memo]

    def inactive_now(self, customer_id: int) -> bool:
        row = self.facts.row_of(customer_id)
        return bool(self.inactive_rows[row]) if row >= 0 else False

    # ------------------------------------------------------------------ changes

    def campaign_changes(self) -> list[CampaignChange]:
        changes = []
        for name in sorted(set(self.flows) | set(self.state.versions)):
            old = self.state.versions.get(name)
            active = [e for e in self.enrolled.get(name, {}).values() if e.status == ACTIVE]
            if name not in self.flows:
                changes.append(CampaignChange(name, REMOVE, old, None, STOP, len(active)))
                continue
            flow = self.flows[name]
            elsewhere = sum(1 for e in active if e.version != flow.version)
            if old is None:
                action = CREATE
            else:
                action = CHANGE if old != flow.version else UNCHANGED
            in_flight = flow.on_change if (action == CHANGE or elsewhere) else None
            definition = MappingProxyType(dict(self.versions[name][1])) if action in (CREATE, CHANGE) else None
            changes.append(CampaignChange(name, action, old, flow.version, in_flight, elsewhere, flow.kind, flow.enabled, definition))
        return changes

    # ------------------------------------------------------------------ enrollments in flight

    def old_flow(self, campaign: str, version: str) -> Flow | None:
        key = (campaign, version)
        if key not in self.old_flows:
            definition = self.state.definitions.get(f"{campaign}/{version}")
            self.old_flows[key] = sms_parts.price_flow(Flow.from_definition(campaign, version, definition) if definition else None, self.sms)
            if definition is None:
                self.violations.append(Violation(
                    "missing_definition", campaign,
                    f"enrollments on version {version} continue, but state has no definition of that version; "
                    f"they run on the current version {self.flows[campaign].version}",
                    MappingProxyType({"enrollments": float(sum(1 for e in self.enrolled[campaign].values() if e.status == ACTIVE and e.version == version))}),
                ))
        return self.old_flows[key]

    def in_flight(self, flow: Flow) -> None:
        for customer_id, e in self.enrolled.get(flow.campaign, {}).items():
            if e.status != ACTIVE:
                continue
            if e.version == flow.version and not (flow.enabled and e.group == TREATMENT and e.next_step_at is not None
                                                  and e.next_step_at <= self.now):
                continue  # nothing due: left as it is (the forecast counts its later steps)
            row = _Row.of(e)
            run = flow
            if e.version != flow.version:
                if flow.on_change == "stop":
                    row.exit("campaign_changed", STOP)
                    self.rows[(flow.campaign, customer_id)] = (row, flow)
                    continue
                if flow.on_change == "migrate":
                    row.version = flow.version
                    row.action = MIGRATE
                    if row.step >= len(flow.steps):
                        row.status, row.next_step_at = COMPLETED, None
                else:
                    run = self.old_flow(flow.campaign, e.version) or flow
            if flow.enabled and row.group == TREATMENT and row.status == ACTIVE:
                self.progress(run, row)
            # Kept even when untouched so far: the gate may still change it.
            self.rows[(flow.campaign, customer_id)] = (row, run)

    def removed(self, campaign: str) -> None:
        for customer_id, e in self.enrolled.get(campaign, {}).items():
            if e.status == ACTIVE:
                row = _Row.of(e)
                row.exit("campaign_removed", STOP)
                self.rows[(campaign, customer_id)] = (row, None)

    # ------------------------------------------------------------------ entries

    def eligible(self, flow: Flow) -> tuple[np.ndarray, np.ndarray]:
        """(the audience's members, those of them no excluded segment holds), sorted."""
        members = self.audiences.members.get(flow.audience)
        if members is None:
            raise ValueError(f"campaign {flow.campaign}: segment {flow.audience!r} was not evaluated (audiences lack it)")
        eligible = np.asarray(members, dtype=np.int64)
        for segment in flow.exclude:
            excluded = self.audiences.members.get(segment)
            if excluded is None:
                raise ValueError(f"campaign {flow.campaign}: excluded segment {segment!r} was not evaluated (audiences lack it)")
            eligible = np.setdiff1d(eligible, np.asarray(excluded, dtype=np.int64), assume_unique=True)
        if len(eligible) > 1 and bool(np.any(eligible[1:] < eligible[:-1])):  # Audiences promise sorted members
            eligible = np.sort(eligible)
        return np.asarray(members), eligible

    def assigned(self, flow: Flow) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(eligible ids, their groups, their arms, which are in the treatment group)
        of a campaign, drawn once per plan. The last as booleans: comparing the
        groups' strings took ~0.1 s of a plan at 1M customers."""
        if flow.campaign not in self._assigned:
            _, eligible = self.eligible(flow)
            codes = group_codes(self.project.name, flow.campaign, eligible, holdout=self.policies.global_holdout, control=flow.control)
            arms = np.empty(len(eligible), dtype=object)  # all None
            treated = codes == GROUPS.index(TREATMENT)
            arms[treated] = arms_of(self.project.name, flow.campaign, eligible[treated], [(a.name, a.weight) for a in flow.arms])
            self._assigned[flow.campaign] = (eligible, np.array(GROUPS, dtype=object)[codes], arms, treated)
            self._group_counts[flow.campaign] = dict(zip(GROUPS, np.bincount(codes, minlength=len(GROUPS)).tolist()))
        return self._assigned[flow.campaign]

    def enter(self, flow: Flow) -> CampaignAudience:
        eligible, group_array, arm_array, treated_array = self.assigned(flow)  # raises when the audience was not evaluated
        members = self.audiences.members[flow.audience]
        existing = self.enrolled.get(flow.campaign, {})
        groups = self._group_counts[flow.campaign]
        arm_counts = {arm.name: int(np.count_nonzero(arm_array == arm.name)) for arm in flow.arms}
        entering = suppressed = 0
        if flow.enabled and not self.one_by_one:
            entering, suppressed = self.enter_columns(flow, eligible, group_array, arm_array, treated_array, existing)
        elif flow.enabled:
            assigned = dict(zip(eligible.tolist(), zip(group_array.tolist(), arm_array.tolist())))
            for customer_id, at in entries(flow, eligible.tolist(), existing, self.facts, self.now, self.tz, self.lookback):
                if self.inactive_now(customer_id):
                    suppressed += 1
                    self.held[(flow.campaign, gate.SUPPRESSED)] += 1
                    continue
                group, arm = assigned[customer_id]
                previous = existing.get(customer_id)
                treated = group == TREATMENT and bool(flow.steps)
                row = _Row(flow.campaign, flow.version, customer_id, group, arm, 0, ACTIVE if treated else COMPLETED, at,
                           flow.first_due(at, arm) if treated else None, group if group != TREATMENT else None,
                           (previous.entries + 1) if previous else 1, None, ENTER)
                if treated:
                    self.progress(flow, row)
                self.rows[(flow.campaign, customer_id)] = (row, flow)
                entering += 1
        return CampaignAudience(
            flow.campaign, flow.audience, int(len(members)), int(len(eligible)), groups[HOLDOUT], groups[CONTROL],
            groups[TREATMENT], tuple((arm.name, arm_counts[arm.name]) for arm in flow.arms), entering, suppressed,
        )

    def enter_columns(self, flow: Flow, eligible: np.ndarray, group_array: np.ndarray, arm_array: np.ndarray,
                      treated_array: np.ndarray, existing: Mapping[int, SnapshotEnrollment]) -> tuple[int, int]:
        """The entering customers of ``flow`` as :class:`_Entrants`, walked to
        their first message (the columns twin of the loop in :meth:`enter`):
        (entering, suppressed)."""
        positions, at = entering(flow, eligible, existing, self.facts, self.now, self.tz, self.lookback)
        ids = eligible[positions]
        rows = self.facts.rows_of(ids)
        inactive = (rows >= 0) & self.inactive_rows[np.where(rows >= 0, rows, 0)]
        suppressed = int(np.count_nonzero(inactive))
        if suppressed:
            self.held[(flow.campaign, gate.SUPPRESSED)] += suppressed
        keep = ~inactive
        positions, ids, at, rows = positions[keep], ids[keep], at[keep], rows[keep]
        groups, arms, in_treatment = group_array[positions], arm_array[positions], treated_array[positions]
        entries_so_far = np.ones(len(ids), dtype=np.int64)
        if existing:
            for index in np.flatnonzero(np.isin(ids, np.fromiter(existing, dtype=np.int64, count=len(existing)))).tolist():
                entries_so_far[index] = existing[int(ids[index])].entries + 1
        treated = in_treatment & bool(flow.steps)
        due = np.full(len(ids), NO_TIME, dtype=np.int64)
        if treated.any():
            first_wait = _us(flow.steps[0].wait)
            for arm, chosen in _by_arm(flow, arms, treated):
                delay = _us(flow.delay(arm)) if flow.kind == "triggered" else 0
                due[chosen] = at[chosen] + delay + first_wait
        entrants = _Entrants(
            flow, ids, at, groups, in_treatment, arms, entries_so_far, self.reach_classes(ids, rows),
            step=np.zeros(len(ids), dtype=np.int64), due=due,
            # Object columns by gathering from the few values: np.where over
            # strings, then astype(object), made a new str per entrant (~0.1 s per 700k).
            status=np.array([COMPLETED, ACTIVE], dtype=object)[treated.view(np.int8)],
            exit_reason=np.where(in_treatment, None, groups),
            option=np.full(len(ids), -1, dtype=np.int64),
            last_message_key=np.empty(len(ids), dtype=object),  # all None
        )
        self.walk(entrants, rows)
        self.entrants[flow.campaign] = entrants
        return len(ids), suppressed

    def walk(self, e: _Entrants, rows: np.ndarray) -> None:
        """:meth:`progress` for entrants: those due now leave on `unless` or
        their goal, else move step by step until one has a channel that reaches
        them (a candidate for the gate) or the next step is not yet due. A new
        enrollment has no previous message, so every step's `if` holds."""
        flow, now = e.flow, to_micros(self.now)
        due_now = (e.status == ACTIVE) & (e.due <= now)
        if not due_now.any():
            return
        last_order = self.facts.last_order_micros(rows)
        left = np.zeros(len(e.ids), dtype=bool)
        if flow.kind == "triggered":
            left = due_now & self.unless_happened(flow, e.ids, last_order, e.at)
            self.leave(e, left, "unless")
        if flow.goal_within is not None:
            goal = due_now & ~left & (last_order != NO_TIME) & (e.at < last_order) & (last_order <= e.at + _us(flow.goal_within))
            self.leave(e, goal, "goal")
            left |= goal
        walking = due_now & ~left
        for index, step in enumerate(flow.steps):
            if not walking.any():
                return
            option = self.options_for(step, e.ids, e.reach, walking)
            sending = walking & (option >= 0)
            e.option[sending] = option[sending]
            held = walking & (option < 0)
            for code, count in zip(*np.unique(option[held], return_counts=True)):
                self.held[(flow.campaign, self.reasons[-int(code) - 1])] += int(count)
            e.step[held] = index + 1
            if index + 1 < len(flow.steps):
                e.due[held] += _us(flow.steps[index + 1].wait)
                walking = held & (e.due <= now)
            else:
                e.due[held] = NO_TIME
                e.status[held] = COMPLETED
                walking = held & False

    @staticmethod
    def leave(e: _Entrants, chosen: np.ndarray, reason: str) -> None:
        e.status[chosen], e.due[chosen], e.exit_reason[chosen] = EXITED, NO_TIME, reason

    def unless_happened(self, flow: Flow, ids: np.ndarray, last_order: np.ndarray, at: np.ndarray) -> np.ndarray:
        """cascades.unless_happened for many customers."""
        happened = np.zeros(len(ids), dtype=bool)
        for kind in flow.unless():
            seen = last_order if kind == "order" else self.facts.latest_event_micros(kind, ids)
            happened |= (seen != NO_TIME) & (seen > at)
        return happened

    def reach_classes(self, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per customer, a class of equal :meth:`reach_key`: the facts' reach code,
        or (state holds something against them, or no facts) one of their own, below 0."""
        classes = np.where(rows >= 0, self.reach_codes[np.where(rows >= 0, rows, 0)], -1)
        special = rows < 0
        if self.held_customers:
            special |= np.isin(ids, np.fromiter(self.held_customers, dtype=np.int64, count=len(self.held_customers)))
        classes[special] = -1 - np.flatnonzero(special)
        return classes

    def options_for(self, step: Step, ids: np.ndarray, classes: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """:meth:`resolve` for the ``chosen`` customers: an index into
        ``self.options`` when a channel reaches them, else -1 - an index into
        ``self.reasons`` (the rule that held the step back); 0 for the others."""
        found = np.zeros(len(ids), dtype=np.int64)
        unique, first, inverse = unique_small(classes[chosen], return_index=True, return_inverse=True)
        representatives = ids[chosen][first]
        codes = np.empty(len(unique), dtype=np.int64)
        for position, customer_id in enumerate(representatives.tolist()):
            codes[position] = self.option_code(self.resolve(step, customer_id))
        found[chosen] = codes[inverse]
        return found

    def option_code(self, resolved: tuple[str, str, float] | str) -> int:
        table, index = (self.reasons, self.reason_index) if isinstance(resolved, str) else (self.options, self.option_index)
        code = index.get(resolved)
        if code is None:
            code = index[resolved] = len(table)
            table.append(resolved)
        return -1 - code if isinstance(resolved, str) else code

    # ------------------------------------------------------------------ cascade steps

    def progress(self, flow: Flow, row: _Row) -> None:
        """Walk the row through every step due now until one has a message to
        send (a candidate for the gate), the row waits, or it ends."""
        while row.status == ACTIVE and row.next_step_at is not None and row.next_step_at <= self.now:
            if row.step >= len(flow.steps):
                row.status, row.next_step_at = COMPLETED, None
                row.mark(SKIP)
                return
            last_order_at = self.facts.last_order_at(row.customer_id)
            if self.inactive_now(row.customer_id):
                self.held[(flow.campaign, gate.SUPPRESSED)] += 1
                row.exit(gate.SUPPRESSED)
                return
            if row.step == 0 and flow.kind == "triggered" and unless_happened(flow, last_order_at, self.facts, row.customer_id, row.entered_at):
                row.exit("unless")
                return
            if goal_reached(flow, last_order_at, row.entered_at):
                row.exit("goal")
                return
            step = flow.steps[row.step]
            if not condition_holds(step.condition, self.outcomes.get(row.last_message_key) if row.last_message_key else None):
                row.advance(flow, row.next_step_at, SKIP)
                continue
            resolved = self.resolve(step, row.customer_id)
            if isinstance(resolved, str):
                self.held[(flow.campaign, resolved)] += 1
                row.advance(flow, row.next_step_at, SKIP)
                continue
            channel, template, cost = resolved
            key = message_key(flow.campaign, flow.version, row.customer_id, row.step, window_of(flow.kind, row.entered_at, self.tz))
            self.candidates.append(_Candidate(row, flow, step, channel, template, cost, key))
            return

    # ------------------------------------------------------------------ the gate

    def gate(self) -> tuple[Rows, list[Deferral], Mapping[str, float], dict[str, list[float]]]:
        """Every candidate message through the gate, in priority order (higher
        first), then campaign, then customer: quiet hours and send windows
        defer, budgets hold back, frequency caps skip the step. Returns the
        messages (by campaign, customer and step), the deferrals, what each
        campaign's messages cost and what budgets held back."""
        blocks = self.candidate_blocks()
        customers = sorted_union([block.customers for block in blocks])
        caps = gate.FrequencyCaps.build(self.project, self.now, self.state.recent_sends, customers, self.channel_names)
        planned_cost: Counter = Counter()
        over_budget: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # campaign -> [messages, cost]
        messages: dict[str, list[Rows]] = defaultdict(list)  # campaign -> its messages, in the gate's order
        deferred: list[Deferral] = []
        for block in blocks:
            outcome, moved = self.decide(block, caps, planned_cost)
            held_cost = block.costs[outcome == OVER_BUDGET].tolist()
            for rule, count in ((gate.BUDGET, len(held_cost)), (gate.FREQUENCY_CAP, int(np.count_nonzero(outcome == CAPPED)))):
                if count:
                    self.held[(block.campaign, rule)] += count
            if held_cost:
                over_budget[block.campaign][0] += len(held_cost)
                for cost in held_cost:  # in the gate's order: the sum a loop would give
                    over_budget[block.campaign][1] += cost
            messages[block.campaign] += [self.apply_objects(block, outcome, moved, deferred),
                                         self.apply_entrants(block, outcome, moved, deferred)]
        return _sorted_messages(messages), deferred, planned_cost, over_budget

    def candidate_blocks(self) -> list[_Block]:
        """The candidates grouped by (priority, campaign), in the gate's order."""
        objects: dict[tuple[int, str], list[_Candidate]] = defaultdict(list)
        for candidate in self.candidates:
            objects[(-candidate.flow.priority, candidate.flow.campaign)].append(candidate)
        entrants = {(-e.flow.priority, name): e for name, e in self.entrants.items() if (e.option >= 0).any()}
        return [self.block(campaign, objects.get((priority, campaign), []), entrants.get((priority, campaign)))
                for priority, campaign in sorted(set(objects) | set(entrants))]

    def block(self, campaign: str, objects: list[_Candidate], entrants: _Entrants | None) -> _Block:
        """One campaign's candidates at one priority as columns, by customer:
        the one-by-one candidates and the entrants with a message due."""
        channel_code = {name: code for code, name in enumerate(self.channel_names)}
        flows = list({id(flow): flow for flow in [c.flow for c in objects] + ([entrants.flow] if entrants else [])}.values())
        slot = {id(flow): index for index, flow in enumerate(flows)}
        customers = [np.array([c.row.customer_id for c in objects], dtype=np.int64)]
        channels = [np.array([channel_code[c.channel] for c in objects], dtype=np.int64)]
        costs = [np.array([c.cost for c in objects], dtype=np.float64)]
        slots = [np.array([slot[id(c.flow)] for c in objects], dtype=np.int64)]
        entrant = [np.full(len(objects), -1, dtype=np.int64)]
        if entrants is not None:
            chosen = np.flatnonzero(entrants.option >= 0)
            options = entrants.option[chosen]
            customers.append(entrants.ids[chosen])
            channels.append(np.array([channel_code[channel] for channel, _, _ in self.options], dtype=np.int64)[options])
            costs.append(np.array([cost for _, _, cost in self.options], dtype=np.float64)[options])
            slots.append(np.full(len(chosen), slot[id(entrants.flow)], dtype=np.int64))
            entrant.append(chosen)
        order = np.argsort(np.concatenate(customers), kind="stable")  # one candidate per customer and campaign
        return _Block(campaign, np.concatenate(customers)[order], np.concatenate(channels)[order], np.concatenate(costs)[order],
                      flows, np.concatenate(slots)[order], objects, order, np.concatenate(entrant)[order], entrants)

    def decide(self, block: _Block, caps: gate.FrequencyCaps, planned_cost: Counter) -> tuple[np.ndarray, _Answers]:
        """What the gate does with each candidate of ``block`` (SENT, DEFERRED,
        OVER_BUDGET, CAPPED), and where deferred ones move (``moved[index]``: (until, rule), None for the rest)."""
        moved = self.deferrals(block)
        live = np.array([answer is None for answer in moved.answers], dtype=bool)[moved.which]
        positions = caps.positions(block.customers)
        blocked = caps.blocked(positions, block.channels)
        budgets = np.array([np.inf if flow.budget is None else flow.budget for flow in block.flows])[block.flow_slot]
        outcome = np.where(live, np.where(blocked, CAPPED, SENT), DEFERRED)
        spent = float(self.state.spend.get(block.campaign, 0.0))
        # Planned spend before each candidate while no budget holds one back; the
        # sums are the ones a loop adding cost by cost would make.
        planned = np.cumsum(np.r_[planned_cost[block.campaign], np.where(outcome == SENT, block.costs, 0.0)])
        over = live & ((spent + planned[:-1]) + block.costs > budgets + _EPSILON)
        first = int(np.argmax(over)) if over.any() else len(outcome)
        so_far = float(planned[first])
        for index in range(first, len(outcome)):  # from the first held back on: one by one
            if not live[index]:
                continue
            cost = float(block.costs[index])
            if spent + so_far + cost > budgets[index] + _EPSILON:
                outcome[index] = OVER_BUDGET
            elif blocked[index]:
                outcome[index] = CAPPED
            else:
                outcome[index] = SENT
                so_far += cost
        planned_cost[block.campaign] = so_far
        sent = outcome == SENT
        caps.record(positions[sent], block.channels[sent])
        return outcome, moved

    def deferrals(self, block: _Block) -> _Answers:
        """gate.deferral per candidate; every candidate sends at ``now``, so the
        answer depends on the customer's zone and the campaign's window alone."""
        rows = self.facts.rows_of(block.customers)
        codes, names = self.zones
        zones = np.where(rows >= 0, codes[np.where(rows >= 0, rows, 0)], len(names))  # the last: no facts, no zone
        pairs = zones * len(block.flows) + block.flow_slot
        unique, first, inverse = unique_small(pairs, return_index=True, return_inverse=True)
        answers = []
        for pair, index in zip(unique.tolist(), first.tolist()):
            zone = (names + (None,))[pair // len(block.flows)]
            flow = block.flows[pair % len(block.flows)]
            window = flow.schedule.get("window") if flow.kind == "recurring" else None
            memo = (zone, id(window))
            if memo not in self._deferrals:
                customer_id = int(block.customers[index])
                self._deferrals[memo] = gate.deferral(self.now, self.facts.get(customer_id), self.tz, self.policies.quiet_hours, window)
            answers.append(self._deferrals[memo])
        return _Answers(answers, inverse)

    def apply_objects(self, block: _Block, outcome: np.ndarray, moved: _Answers, deferred: list) -> Rows:
        """The gate's decisions on rows one by one (from state, or the reference
        path); the messages they send."""
        messages = []
        for index in np.flatnonzero(block.entrant < 0).tolist():
            candidate = block.objects[int(block.order[index])]
            row, flow, decided = candidate.row, candidate.flow, outcome[index]
            if decided == DEFERRED:
                until, rule = moved[index]
                deferred.append(Deferral(candidate.key, flow.campaign, row.customer_id, candidate.channel, until, rule))
                row.next_step_at = until
                row.mark(DEFER)
            elif decided == CAPPED:
                row.advance(flow, self.now, SKIP)
            elif decided == SENT:
                messages.append(MessageAction(
                    candidate.key, flow.campaign, flow.version, row.customer_id, candidate.step.index, candidate.channel,
                    candidate.template, flow.offer_for(candidate.step, row.arm), candidate.cost, row.next_step_at, row.arm,
                ))
                row.last_message_key = candidate.key
                row.advance(flow, self.now, SEND)
        self.object_messages += messages
        return Rows.of(MessageAction, messages)

    def apply_entrants(self, block: _Block, outcome: np.ndarray, moved: _Answers, deferred: list) -> Rows:
        """The gate's decisions on entrants, a column at a time; the messages they send."""
        e = block.entrants
        if e is None:
            return Rows.of(MessageAction, ())
        chosen = block.entrant >= 0
        indices, decided = block.entrant[chosen], outcome[chosen]
        flow = e.flow
        later = np.flatnonzero(chosen & (outcome == DEFERRED))
        for position, index, key in zip(later.tolist(), block.entrant[later].tolist(), self.entrant_keys(e, block.entrant[later])):
            until, rule = moved[position]
            deferred.append(Deferral(key, flow.campaign, int(e.ids[index]), self.options[int(e.option[index])][0], until, rule))
            e.due[index] = to_micros(until)
        sent = indices[decided == SENT]
        e.last_message_key[sent] = self.entrant_keys(e, sent)
        arm_names = [None, *(arm.name for arm in flow.arms)]
        arms = e.arms[sent]
        arm_codes = np.zeros(len(sent), dtype=np.int64)
        for code, name in enumerate(arm_names[1:], start=1):
            arm_codes[arms == name] = code
        offers = [flow.offer_for(step, arm) for step in flow.steps for arm in arm_names]  # by step, then arm
        options = e.option[sent]
        messages = Rows(MessageAction, (
            e.last_message_key[sent].tolist(), [flow.campaign] * len(sent), [flow.version] * len(sent), e.ids[sent].tolist(),
            e.step[sent].tolist(), *(_pick([option[field] for option in self.options], options) for field in (0, 1)),
            _pick(offers, e.step[sent] * len(arm_names) + arm_codes), _pick([cost for _, _, cost in self.options], options),
            self.moments(e.due[sent]), arms.tolist(),
        ))
        self.advance_now(e, indices[(decided == SENT) | (decided == CAPPED)])
        return messages

    def advance_now(self, e: _Entrants, indices: np.ndarray) -> None:
        """_Row.advance(flow, now) for entrants: the next step counts its wait from now."""
        e.step[indices] += 1
        now = to_micros(self.now)
        for step_index in np.unique(e.step[indices]).tolist():
            chosen = indices[e.step[indices] == step_index]
            if step_index < len(e.flow.steps):
                e.due[chosen] = now + _us(e.flow.steps[step_index].wait)
            else:
                e.due[chosen] = NO_TIME
                e.status[chosen] = COMPLETED

    def entrant_keys(self, e: _Entrants, indices: np.ndarray) -> list[str]:
        """message_key of the entrants' due steps."""
        unique, inverse = _distinct(e.at[indices])
        windows = [window_of(e.flow.kind, from_micros(at), self.tz) for at in unique.tolist()]
        prefix = f"{e.flow.campaign}/{e.flow.version}/"
        return [f"{prefix}{customer_id}/{step}/{windows[window]}"
                for customer_id, step, window in zip(e.ids[indices].tolist(), e.step[indices].tolist(), inverse.tolist())]

    def moment(self, micros: int) -> datetime | None:
        """from_micros, memoised: entrants share few distinct instants."""
        found = self._moments.get(micros)
        if found is None and micros != NO_TIME:
            found = self._moments[micros] = from_micros(micros)
        return found

    # ------------------------------------------------------------------ violations and forecast

    def budget_violations(self, planned: Mapping[str, float], over_budget: Mapping[str, list[float]]) -> None:
        """``planned``: what the campaign's messages of this plan cost, as the gate summed them against its budget."""
        for name, (count, cost) in sorted(over_budget.items()):
            flow = self.flows[name]
            spent = float(self.state.spend.get(name, 0.0))
            wanted = spent + planned.get(name, 0.0) + cost
            self.violations.append(Violation(
                "budget", name,
                f"campaign {name} needs {wanted:,.2f} (spent {spent:,.2f} + planned now {planned.get(name, 0.0):,.2f} + "
                f"held back {cost:,.2f}) against its budget {flow.budget:,.2f}; {int(count):,} messages held back",
                MappingProxyType({"budget": flow.budget, "spent": round(spent, 6), "planned": round(planned.get(name, 0.0), 6),
                                  "held_back_messages": float(count), "held_back_cost": round(cost, 6),
                                  "over_by": round(wanted - flow.budget, 6)}),
            ))

    def broadcast_violations(self, changes: list[CampaignChange]) -> None:
        for change in changes:
            flow = self.flows.get(change.name)
            if flow is None or flow.kind != "broadcast" or not flow.enabled or self.enrolled.get(change.name):
                continue
            at = parse_at(flow.schedule["at"], self.tz)
            if self.now >= at + ENTRY_GRACE:
                self.violations.append(Violation(
                    "broadcast_missed", change.name,
                    f"broadcast {change.name} was scheduled at {at.isoformat()} and never ran; "
                    f"runs more than {ENTRY_GRACE.total_seconds() / 3600:g} h after it enrol nobody, so it will send nothing",
                    MappingProxyType({"hours_late": round((self.now - at).total_seconds() / 3600, 2)}),
                ))

    def forecast(self) -> Forecast:
        """Later steps of enrollments this plan leaves untouched."""
        forecast = Forecast(self.project, self.now, self.resolve)
        alike: dict = {}
        for name in sorted(self.enrolled):
            flow = self.flows.get(name)
            if flow is None or not flow.enabled:
                continue
            for customer_id, e in self.enrolled[name].items():
                if (name, customer_id) in self.rows or e.status != ACTIVE or e.group != TREATMENT:
                    continue
                run = flow if e.version == flow.version else (self.old_flows.get((name, e.version)) or flow)
                self.alike(alike, run, customer_id, e.step, e.next_step_at)
        self.forecast_alike(forecast, alike)
        return forecast

    def alike(self, groups: dict, flow: Flow, customer_id: int, step: int, due: datetime | None, count: int = 1) -> None:
        """Count an enrollment (or ``count`` like it) into ``groups``: those with equal
        flow, step, due time and reach key forecast the same messages, so each group is walked once."""
        key = (id(flow), step, due, self.reach_key(customer_id))
        if key in groups:
            groups[key][0] += count
        else:
            groups[key] = [count, flow, customer_id]

    def alike_columns(self, groups: dict, flow: Flow, ids: np.ndarray, classes: np.ndarray, steps: np.ndarray,
                      dues: np.ndarray) -> None:
        """:meth:`alike` for many enrollments at once, grouped by step, due time (µs)
        and reach class (:meth:`reach_classes`), one representative per group."""
        if not len(ids):
            return
        due_values, due_code = _distinct(dues)
        class_values, class_code = unique_small(classes, return_inverse=True)
        combined = (steps * len(due_values) + due_code) * len(class_values) + class_code
        _, first, counts = unique_small(combined, return_index=True, return_counts=True)
        for index, count in zip(first.tolist(), counts.tolist()):
            self.alike(groups, flow, int(ids[index]), int(steps[index]), self.moment(int(dues[index])), count)

    def forecast_alike(self, forecast: Forecast, groups: dict) -> None:
        for (_, step, due, _), (count, flow, customer_id) in groups.items():
            forecast.cascade(flow, customer_id, step, due, count)

    def forecast_messages(self, forecast: Forecast, messages: Rows) -> None:
        for (channel, cost), count in sorted(Counter(zip(messages.column("channel"), messages.column("cost"))).items()):
            forecast.add(self.now, channel, cost, count)
        alike: dict = {}
        for (_, _), (row, flow) in self.rows.items():
            if flow is not None and flow.enabled and row.status == ACTIVE and row.group == TREATMENT:
                self.alike(alike, flow, row.customer_id, row.step, row.next_step_at)
        for e in self.entrants.values():
            chosen = (e.status == ACTIVE) & e.treated
            if e.flow.enabled:
                self.alike_columns(alike, e.flow, e.ids[chosen], e.reach[chosen], e.step[chosen], e.due[chosen])
        self.forecast_alike(forecast, alike)

    def promo_wanted(self) -> dict[tuple[str, str], list]:
        """promo.wanted for this plan: rows one by one, entrants a column at a time."""
        wanted = promo.wanted(self.project, self.object_messages, self.object_enrollments)
        pooled = promo.pooled_offers(self.project)
        for e in self.entrants.values():
            sent = e.last_message_key.astype(bool)  # a key, not None: the message went, then the step advanced by one
            active = (e.status == ACTIVE) & e.treated
            for chosen, message in ((sent, True), (active, False)):
                for step in np.unique(e.step[chosen]).tolist():
                    for arm, in_arm in _by_arm(e.flow, e.arms, chosen & (e.step == step)):
                        if message:  # the offer of the message sent (as MessageAction.offer)
                            offer = e.flow.offer_for(e.flow.steps[step - 1], arm)
                        else:  # the offer of the next step (as promo.wanted reads an enrollment)
                            offer = promo.step_offer(self.project, e.flow.campaign, step, arm)
                        if offer in pooled:
                            wanted[(e.flow.campaign, offer)].append(e.ids[in_arm])
        return wanted

    def enrollment_actions(self) -> Rows:
        """Every enrollment this plan writes, by campaign and customer."""
        rows: dict[str, list[tuple[int, EnrollmentAction]]] = defaultdict(list)
        for (campaign, customer_id), (row, _) in self.rows.items():
            if row.action is not None:
                rows[campaign].append((customer_id, row.result()))
        self.object_enrollments = [action for pairs in rows.values() for _, action in pairs]
        found: list[Rows] = []
        for campaign in sorted(set(rows) | set(self.entrants)):
            ones = sorted(rows.get(campaign, ()), key=lambda pair: pair[0])
            found.append(Rows.of(EnrollmentAction, [action for _, action in ones]))
            e = self.entrants.get(campaign)
            if e is not None and len(e.ids):
                if ones:  # merged by customer: both are ordered by it
                    order = np.argsort(np.r_[np.array([c for c, _ in ones], dtype=np.int64), e.ids], kind="stable")
                    found[-1] = Rows.concat(EnrollmentAction, [found[-1], self.entrant_actions(e)]).take(order.tolist())
                else:
                    found[-1] = self.entrant_actions(e)
        return Rows.concat(EnrollmentAction, found)

    def entrant_actions(self, e: _Entrants) -> Rows:
        flow, count = e.flow, len(e.ids)
        return Rows(EnrollmentAction, (
            [ENTER] * count, [flow.campaign] * count, [flow.version] * count, e.ids.tolist(), e.groups.tolist(), e.arms.tolist(),
            e.step.tolist(), e.status.tolist(), self.moments(e.at), self.moments(e.due), e.exit_reason.tolist(),
            e.entries.tolist(), e.last_message_key.tolist(),
        ))

    def moments(self, micros: np.ndarray) -> list[datetime | None]:
        """:meth:`moment` of each; entrants share few distinct instants."""
        unique, inverse = _distinct(micros)
        return _pick([self.moment(us) for us in unique.tolist()], inverse)

    def forecast_broadcasts(self, forecast: Forecast) -> None:
        for name, flow in self.flows.items():
            if flow.kind != "broadcast" or not flow.enabled:
                continue
            at = parse_at(flow.schedule["at"], self.tz)
            if not (self.now < at < forecast.end):
                continue
            eligible, _, arms, treated = self.assigned(flow)
            keep = treated.copy()
            existing = self.enrolled.get(name)
            if existing:
                keep &= np.fromiter((may_enter(flow, existing.get(c), at) for c in eligible.tolist()), dtype=bool, count=len(eligible))
            rows = self.facts.rows_of(eligible)
            known = rows >= 0
            keep &= ~(known & self.facts.inactive_rows(at, self.policies.suppress_inactive_days)[np.where(known, rows, 0)])
            alike: dict = {}
            for arm, chosen in _by_arm(flow, arms, keep):
                ids = eligible[chosen]
                self.alike_columns(alike, flow, ids, self.reach_classes(ids, rows[chosen]), np.zeros(len(ids), dtype=np.int64),
                                   np.full(len(ids), to_micros(flow.first_due(at, arm)), dtype=np.int64))
            self.forecast_alike(forecast, alike)

    def monthly_violation(self, forecast: Forecast) -> None:
        limit = self.policies.monthly_budget
        if limit is None:
            return
        spent = float(self.state.spend_this_month)
        ahead = forecast.in_month()
        if spent + ahead > limit + _EPSILON:
            self.violations.append(Violation(
                "monthly_budget", None,
                f"this month's spend would reach {spent + ahead:,.2f} (spent {spent:,.2f} + planned and forecast "
                f"{ahead:,.2f} for the rest of the month within the forecast) against the monthly budget {float(limit):,.2f}",
                MappingProxyType({"monthly_budget": float(limit), "spent": round(spent, 6), "forecast": round(ahead, 6),
                                  "over_by": round(spent + ahead - float(limit), 6)}),
            ))


def plan(project: Project, audiences: Audiences, state: StateSnapshot, now: datetime, facts: CustomerFacts, *,
         versions: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None, sms: Sequence[SmsEstimate] = (),
         history: Mapping[HistorySpec, CustomerHistory] | None = None, one_by_one: bool = False) -> Plan:
    """What apply would do at ``now`` (a naive ``now`` is project-local time).
    ``sms``: parts per SMS template (campaignctl.sms.estimate_sms_templates);
    without it every SMS is costed as one part. ``history``: the order history
    of the audiences (campaignctl.offers.history.load_history for
    economics.needed_history(project)); with it the plan forecasts every
    campaign with an offer and checks policies.drr_limits, without it neither.
    ``one_by_one``: walk entering customers one at a time, as rows from state
    are: the reference the column path is tested against (same plan, slower)."""
    with _without_cyclic_gc():
        return _plan(project, audiences, state, now, facts, versions, sms, history, one_by_one)


def _sorted_messages(parts: Mapping[str, Sequence[Rows]]) -> Rows:
    """The gate's messages by campaign, customer and step; stable, as the gate
    made them (``parts``: each campaign's, in the gate's order). A campaign's
    messages mostly come from one block of the gate, already by customer:
    those are kept as they are, and only the others are sorted (sorting all
    took ~0.1 s at 1M customers)."""
    ordered = []
    for campaign in sorted(parts):
        found = [part for part in parts[campaign] if len(part)]
        rows = found[0] if len(found) == 1 else Rows.concat(MessageAction, found)
        customers, steps = (np.array(rows.column(name), dtype=np.int64) for name in ("customer_id", "step"))
        before = (customers[1:] > customers[:-1]) | ((customers[1:] == customers[:-1]) & (steps[1:] >= steps[:-1]))
        ordered.append(rows if before.all() else rows.take(np.lexsort((steps, customers)).tolist()))
    return ordered[0] if len(ordered) == 1 else Rows.concat(MessageAction, ordered)


@contextmanager
def _without_cyclic_gc():
    """A plan builds millions of small objects and no reference cycles; the
    cyclic collector would walk every one of them again and again as they pile
    up (a third of the planner's time at 1M customers). Reference counting
    still frees everything as usual. On the way out, what the planner made
    goes straight to the oldest generation (a freeze and a thaw, unless the
    process keeps objects frozen of its own): the young generations' next
    collections walked the plan's columns twice more, ~0.13 s at 1M."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def _plan(project: Project, audiences: Audiences, state: StateSnapshot, now: datetime, facts: CustomerFacts,
          versions: Mapping[str, tuple[str, Mapping[str, Any]]] | None, sms: Sequence[SmsEstimate],
          history: Mapping[HistorySpec, CustomerHistory] | None, one_by_one: bool) -> Plan:
    if now.tzinfo is None:
        now = now.replace(tzinfo=ZoneInfo(project.timezone))
    now = now.astimezone(UTC).replace(microsecond=0)
    if versions is None:
        versions = campaign_versions(project)
    planner = _Planner(project, audiences, state, now, facts, versions, sms, one_by_one)
    planner.violations += sms_parts.violations(planner.flows, sms)
    changes = planner.campaign_changes()
    audience_rows = []
    for flow in planner.flows.values():
        planner.in_flight(flow)
        audience_rows.append(planner.enter(flow))
    for change in changes:
        if change.action == REMOVE:
            planner.removed(change.name)
    messages, deferred, planned_cost, over_budget = planner.gate()
    planner.budget_violations(planned_cost, over_budget)
    planner.broadcast_violations(changes)
    forecast = planner.forecast()
    planner.forecast_messages(forecast, messages)
    planner.forecast_broadcasts(forecast)
    planner.monthly_violation(forecast)
    enrollments = planner.enrollment_actions()
    planner.violations += promo.pool_violations(project, planner.promo_wanted(), state, now)
    # The offer forecast comes last: it alone reads the order history, which
    # may still be on its way (executor.compute_plan reads it meanwhile).
    offer_rows: list = []
    if history is not None:
        offer_rows, drr_violations = economics.offer_forecasts(planner, history)
        planner.violations += drr_violations
    return Plan(
        format_version=FORMAT_VERSION,
        project=project.name,
        currency=project.currency,
        timezone=project.timezone,
        now=now,
        state_fingerprint=state.fingerprint(),
        campaign_changes=tuple(changes),
        audiences=tuple(audience_rows),
        enrollments=enrollments,
        messages=messages,
        deferred=tuple(sorted(deferred, key=lambda d: (d.campaign, d.customer_id, d.key))),
        held_back=tuple(HeldBack(campaign, rule, count) for (campaign, rule), count in sorted(planner.held.items())),
        forecast=forecast.result(),
        violations=tuple(sorted(planner.violations, key=lambda v: (v.rule, v.campaign or "", v.message))),
        sms_templates=sms_parts.used_estimates(planner.flows, sms),
        offer_forecast=tuple(sorted(offer_rows, key=lambda row: (row.campaign, row.arm or ""))),
    )
