"""plan(): a pure function of (project, audiences, state, now, facts) -> Plan.

No I/O except reading the project's template files for campaign versions
(pass ``versions`` to avoid even that), no clock, no randomness; every
collection is walked in sorted order, so equal inputs give equal plans.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from ..contracts import address_fingerprint
from ..facts import CONTACT_FOR_KIND, CustomerFacts, event_lookback, reach_reasons
from ..model import Project
from ..offers.history import CustomerHistory, HistorySpec
from ..segments.evaluate import Audiences
from ..sms import SmsEstimate
from . import economics, gate, promo, sms_parts
from .cascades import Flow, Step, condition_holds, goal_reached, resolve_channel, unless_happened
from .forecast import Forecast
from .hashing import CONTROL, HOLDOUT, TREATMENT, arms_of, assignments, campaign_versions, groups_of, message_key, window_of
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
    Violation,
)
from .snapshot import ACTIVE, SnapshotEnrollment, StateSnapshot
from .triggers import ENTRY_GRACE, entries, may_enter, parse_at

UTC = timezone.utc
EXITED, COMPLETED = "exited", "completed"
_EPSILON = 1e-9


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
                 facts: CustomerFacts, versions: Mapping[str, tuple[str, Mapping[str, Any]]], sms: Sequence[SmsEstimate] = ()):
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
        self._assigned: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._draws: tuple[np.ndarray, np.ndarray] | None = None
        self.kinds = tuple(sorted({channel.kind for channel in project.channels.values()}))
        self._reach: dict[int, tuple] = {}
        self._resolved: dict[tuple[int, tuple], tuple[str, str, float] | str] = {}

    # ------------------------------------------------------------------ per-customer facts, memoised

    def reach_key(self, customer_id: int) -> tuple:
        """Everything that decides which channels reach a customer (per channel
        kind: unsubscribed, address gone, no contact or consent, or reachable): customers
        with equal keys resolve every step to the same channel."""
        row = self.fact_rows.get(customer_id, -1)
        if row >= 0 and customer_id not in self.held_customers:
            return self.reach_keys[self.reach_codes[row]]
        key = self._reach.get(customer_id)
        if key is None:
            fact = self.facts.get(customer_id)
            key = tuple(self.unsubscribed.get((customer_id, kind)) or ("no_contact" if fact is None else fact.reachable(kind))
                        for kind in self.kinds)
            self._reach[customer_id] = key
        return key

    @cached_property
    def fact_rows(self) -> Mapping[int, int]:
        return self.facts.rows

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
    def inactive_rows(self) -> np.ndarray:
        return self.facts.inactive_rows(self.now, self.policies.suppress_inactive_days)

    def resolve(self, step: Step, customer_id: int) -> tuple[str, str, float] | str:
        """resolve_channel, computed once per step and reach key."""
        memo = (id(step), self.reach_key(customer_id))
        if memo not in self._resolved:
            self._resolved[memo] = resolve_channel(self.project, step, self.facts.get(customer_id), self.unsubscribed, customer_id)
        return self._resolved[memo]

    def inactive_now(self, customer_id: int) -> bool:
        row = self.fact_rows.get(customer_id, -1)
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
        members = self.audiences.members.get(flow.audience)
        if members is None:
            raise ValueError(f"campaign {flow.campaign}: segment {flow.audience!r} was not evaluated (audiences lack it)")
        eligible = np.asarray(members, dtype=np.int64)
        for segment in flow.exclude:
            excluded = self.audiences.members.get(segment)
            if excluded is None:
                raise ValueError(f"campaign {flow.campaign}: excluded segment {segment!r} was not evaluated (audiences lack it)")
            eligible = np.setdiff1d(eligible, np.asarray(excluded, dtype=np.int64), assume_unique=True)
        return np.asarray(members), np.sort(eligible)

    def assigned(self, flow: Flow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eligible ids, their groups, their arms) of a campaign, drawn once per plan."""
        if flow.campaign not in self._assigned:
            _, eligible = self.eligible(flow)
            draws = self.holdout_draws(eligible) if self.policies.global_holdout > 0 else None
            groups = groups_of(self.project.name, flow.campaign, eligible, holdout=self.policies.global_holdout,
                               control=flow.control, holdout_draws=draws)
            arms = np.full(len(eligible), None, dtype=object)
            treated = groups == TREATMENT
            arms[treated] = arms_of(self.project.name, flow.campaign, eligible[treated], [(a.name, a.weight) for a in flow.arms])
            self._assigned[flow.campaign] = (eligible, groups, arms)
        return self._assigned[flow.campaign]

    def holdout_draws(self, ids: np.ndarray) -> np.ndarray:
        """The global-holdout draw of each of ``ids`` (sorted); one draw per customer per plan."""
        if self._draws is None:
            members = [np.asarray(m, dtype=np.int64) for m in self.audiences.members.values()]
            known = np.unique(np.concatenate(members)) if members else np.empty(0, dtype=np.int64)
            self._draws = (known, assignments(self.project.name, "", known))
        known, draws = self._draws
        at = np.searchsorted(known, ids)
        return draws[at]

    def enter(self, flow: Flow) -> CampaignAudience:
        members, _ = self.eligible(flow)
        eligible, group_array, arm_array = self.assigned(flow)
        existing = self.enrolled.get(flow.campaign, {})
        groups = Counter(group_array.tolist())
        arm_counts = Counter(arm for arm in arm_array.tolist() if arm)
        assigned = dict(zip(eligible.tolist(), zip(group_array.tolist(), arm_array.tolist())))
        entering = suppressed = 0
        if flow.enabled:
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

    def gate(self) -> tuple[list[MessageAction], list[Deferral], dict[str, list[float]]]:
        caps = gate.FrequencyCaps.build(self.project, self.now, self.state.recent_sends)
        planned_cost: Counter = Counter()
        over_budget: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # campaign -> [messages, cost]
        messages, deferred = [], []
        ordered = sorted(self.candidates, key=lambda c: (-c.flow.priority, c.flow.campaign, c.row.customer_id, c.row.step))
        deferrals: dict[tuple, tuple[datetime, str] | None] = {}
        for candidate in ordered:
            row, flow = candidate.row, candidate.flow
            window = flow.schedule.get("window") if flow.kind == "recurring" else None
            # Every candidate sends at `now`: the answer depends on the customer's zone alone.
            memo = (self.facts.timezone(row.customer_id), id(window))
            if memo not in deferrals:
                deferrals[memo] = gate.deferral(self.now, self.facts.get(row.customer_id), self.tz, self.policies.quiet_hours, window)
            moved = deferrals[memo]
            if moved is not None:
                until, rule = moved
                deferred.append(Deferral(candidate.key, flow.campaign, row.customer_id, candidate.channel, until, rule))
                row.next_step_at = until
                row.mark(DEFER)
                continue
            if flow.budget is not None:
                spent = float(self.state.spend.get(flow.campaign, 0.0)) + planned_cost[flow.campaign]
                if spent + candidate.cost > flow.budget + _EPSILON:
                    self.held[(flow.campaign, gate.BUDGET)] += 1
                    over_budget[flow.campaign][0] += 1
                    over_budget[flow.campaign][1] += candidate.cost
                    continue  # the row waits as it is: sent once the budget allows
            if caps.blocking(row.customer_id, candidate.channel) is not None:
                self.held[(flow.campaign, gate.FREQUENCY_CAP)] += 1
                row.advance(flow, self.now, SKIP)
                continue
            caps.record(row.customer_id, candidate.channel)
            planned_cost[flow.campaign] += candidate.cost
            messages.append(MessageAction(
                candidate.key, flow.campaign, flow.version, row.customer_id, candidate.step.index, candidate.channel,
                candidate.template, flow.offer_for(candidate.step, row.arm), candidate.cost, row.next_step_at, row.arm,
            ))
            row.last_message_key = candidate.key
            row.advance(flow, self.now, SEND)
        return messages, deferred, over_budget

    # ------------------------------------------------------------------ violations and forecast

    def budget_violations(self, messages: list[MessageAction], over_budget: Mapping[str, list[float]]) -> None:
        planned: Counter = Counter()
        for message in messages:
            planned[message.campaign] += message.cost
        for name, (count, cost) in sorted(over_budget.items()):
            flow = self.flows[name]
            spent = float(self.state.spend.get(name, 0.0))
            wanted = spent + planned[name] + cost
            self.violations.append(Violation(
                "budget", name,
                f"campaign {name} needs {wanted:,.2f} (spent {spent:,.2f} + planned now {planned[name]:,.2f} + "
                f"held back {cost:,.2f}) against its budget {flow.budget:,.2f}; {int(count):,} messages held back",
                MappingProxyType({"budget": flow.budget, "spent": round(spent, 6), "planned": round(planned[name], 6),
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
        forecast = Forecast(self.project, self.now, self.facts, self.unsubscribed, self.resolve)
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

    def alike(self, groups: dict, flow: Flow, customer_id: int, step: int, due: datetime | None) -> None:
        """Count an enrollment into ``groups``: those with equal flow, step, due time
        and reach key forecast the same messages, so each group is walked once."""
        key = (id(flow), step, due, self.reach_key(customer_id))
        if key in groups:
            groups[key][0] += 1
        else:
            groups[key] = [1, flow, customer_id]

    def forecast_alike(self, forecast: Forecast, groups: dict) -> None:
        for (_, step, due, _), (count, flow, customer_id) in groups.items():
            forecast.cascade(flow, customer_id, step, due, count)

    def forecast_messages(self, forecast: Forecast, messages: list[MessageAction]) -> None:
        for message in messages:
            forecast.add(self.now, message.channel, message.cost)
        alike: dict = {}
        for (_, _), (row, flow) in self.rows.items():
            if flow is not None and flow.enabled and row.status == ACTIVE and row.group == TREATMENT:
                self.alike(alike, flow, row.customer_id, row.step, row.next_step_at)
        self.forecast_alike(forecast, alike)

    def forecast_broadcasts(self, forecast: Forecast) -> None:
        for name, flow in self.flows.items():
            if flow.kind != "broadcast" or not flow.enabled:
                continue
            at = parse_at(flow.schedule["at"], self.tz)
            if not (self.now < at < forecast.end):
                continue
            eligible, groups, arms = self.assigned(flow)
            keep = groups == TREATMENT
            existing = self.enrolled.get(name)
            if existing:
                keep &= np.fromiter((may_enter(flow, existing.get(c), at) for c in eligible.tolist()), dtype=bool, count=len(eligible))
            rows = self.facts.rows_of(eligible)
            known = rows >= 0
            keep &= ~(known & self.facts.inactive_rows(at, self.policies.suppress_inactive_days)[np.where(known, rows, 0)])
            alike: dict = {}
            for arm in dict.fromkeys(arms[keep].tolist()):
                chosen = keep & (arms == arm)
                self.alike_many(alike, flow, eligible[chosen], rows[chosen], flow.first_due(at, arm))
            self.forecast_alike(forecast, alike)

    def alike_many(self, groups: dict, flow: Flow, customer_ids: np.ndarray, rows: np.ndarray, due: datetime) -> None:
        """:meth:`alike` for many customers entering step 0 at ``due``, grouped by
        their reach codes in one pass (state's unsubscribes are rare and go one by one)."""
        one_by_one = (rows < 0) | np.isin(customer_ids, np.fromiter(self.held_customers, dtype=np.int64, count=len(self.held_customers)))
        for customer_id in customer_ids[one_by_one].tolist():
            self.alike(groups, flow, customer_id, 0, due)
        codes = self.reach_codes[rows[~one_by_one]]
        unique, first, counts = np.unique(codes, return_index=True, return_counts=True)
        representatives = customer_ids[~one_by_one][first]
        for code, customer_id, count in zip(unique.tolist(), representatives.tolist(), counts.tolist()):
            key = (id(flow), 0, due, self.reach_keys[code])
            if key in groups:
                groups[key][0] += count
            else:
                groups[key] = [count, flow, customer_id]

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
         history: Mapping[HistorySpec, CustomerHistory] | None = None) -> Plan:
    """What apply would do at ``now`` (a naive ``now`` is project-local time).
    ``sms``: parts per SMS template (campaignctl.sms.estimate_sms_templates);
    without it every SMS is costed as one part. ``history``: the order history
    of the audiences (campaignctl.offers.history.load_history for
    economics.needed_history(project)); with it the plan forecasts every
    campaign with an offer and checks policies.drr_limits, without it neither."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=ZoneInfo(project.timezone))
    now = now.astimezone(UTC).replace(microsecond=0)
    if versions is None:
        versions = campaign_versions(project)
    planner = _Planner(project, audiences, state, now, facts, versions, sms)
    planner.violations += sms_parts.violations(planner.flows, sms)
    changes = planner.campaign_changes()
    audience_rows = []
    for flow in planner.flows.values():
        planner.in_flight(flow)
        audience_rows.append(planner.enter(flow))
    for change in changes:
        if change.action == REMOVE:
            planner.removed(change.name)
    messages, deferred, over_budget = planner.gate()
    planner.budget_violations(messages, over_budget)
    planner.broadcast_violations(changes)
    forecast = planner.forecast()
    planner.forecast_messages(forecast, messages)
    planner.forecast_broadcasts(forecast)
    planner.monthly_violation(forecast)
    offer_rows: list = []
    if history is not None:
        offer_rows, drr_violations = economics.offer_forecasts(planner, history)
        planner.violations += drr_violations
    enrollments = tuple(row.result() for (_, _), (row, _) in sorted(planner.rows.items()) if row.action is not None)
    planner.violations += promo.pool_violations(project, messages, enrollments, state, now)
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
        messages=tuple(sorted(messages, key=lambda m: (m.campaign, m.customer_id, m.step))),
        deferred=tuple(sorted(deferred, key=lambda d: (d.campaign, d.customer_id, d.key))),
        held_back=tuple(HeldBack(campaign, rule, count) for (campaign, rule), count in sorted(planner.held.items())),
        forecast=forecast.result(),
        violations=tuple(sorted(planner.violations, key=lambda v: (v.rule, v.campaign or "", v.message))),
        sms_templates=sms_parts.used_estimates(planner.flows, sms),
        offer_forecast=tuple(sorted(offer_rows, key=lambda row: (row.campaign, row.arm or ""))),
    )
