"""A campaign version as the planner runs it (:class:`Flow`, built from the
recorded definition so old versions run exactly like new ones), and how one
enrollment moves through its cascade: goal and `unless` exits, step
conditions, the channel for a step."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Mapping, Sequence

from ..facts import CustomerFact
from ..model import Project
from ..segments.periods import parse_duration

CONDITION_OUTCOME = {
    "not_delivered": "delivered",
    "not_opened": "opened",
    "not_clicked": "clicked",
    "not_converted": "converted",
}


@dataclass(frozen=True)
class Step:
    index: int
    channel: str  # a project channel name, or "cheapest"
    templates: Mapping[str, str]  # channel kind -> template, for "cheapest"
    template: str | None
    wait: timedelta
    condition: str | None
    offer: str | None
    # template -> SMS parts its longest rendered sample needs (campaignctl.sms);
    # an sms channel's cost is per part. Set by the planner, empty = 1 part.
    sms_parts: Mapping[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ArmSpec:
    name: str
    weight: float
    offer: str | None
    delay: timedelta | None


@dataclass(frozen=True)
class Flow:
    campaign: str
    version: str
    kind: str
    audience: str
    exclude: tuple[str, ...]
    trigger: Mapping[str, Any]
    schedule: Mapping[str, Any]
    steps: tuple[Step, ...]
    goal_within: timedelta | None
    offer: str | None
    control: float
    arms: tuple[ArmSpec, ...]
    per_customer: int | None
    reentry_after: timedelta | None
    on_change: str
    priority: int
    budget: float | None
    enabled: bool

    @classmethod
    def from_definition(cls, campaign: str, version: str, definition: Mapping[str, Any]) -> "Flow":
        spec = definition["campaign"]
        cascade = definition["cascade"]
        steps = tuple(
            Step(
                index=i,
                channel=step.get("channel", "cheapest"),
                templates=dict(step.get("templates") or {}),
                template=step.get("template"),
                wait=parse_duration(step.get("wait", "0")),
                condition=step.get("if"),
                offer=step.get("offer"),
            )
            for i, step in enumerate(cascade["steps"])
        )
        goal = cascade.get("goal") or {}
        caps = spec.get("caps") or {}
        arms = tuple(
            ArmSpec(arm["name"], float(arm.get("weight", 1)), arm.get("offer"),
                    parse_duration(arm["delay"]) if arm.get("delay") is not None else None)
            for arm in spec.get("arms", ())
        )
        return cls(
            campaign=campaign,
            version=version,
            kind=spec.get("kind", "broadcast"),
            audience=spec["audience"],
            exclude=tuple(spec.get("exclude", ())),
            trigger=dict(spec.get("trigger") or {}),
            schedule=dict(spec.get("schedule") or {}),
            steps=steps,
            goal_within=parse_duration(goal["order_within"]) if goal.get("order_within") is not None else None,
            offer=spec.get("offer"),
            control=float(spec.get("control", 0)),
            arms=arms,
            per_customer=caps.get("per_customer"),
            reentry_after=parse_duration(caps["reentry_after"]) if caps.get("reentry_after") is not None else None,
            on_change=spec.get("on_change", "continue"),
            priority=int(spec.get("priority", 50)),
            budget=float(spec["budget"]) if spec.get("budget") is not None else None,
            enabled=bool(spec.get("enabled", True)),
        )

    def arm(self, name: str | None) -> ArmSpec | None:
        return self._arms_by_name.get(name) if name is not None else None

    @cached_property
    def _arms_by_name(self) -> Mapping[str, ArmSpec]:
        return {arm.name: arm for arm in self.arms}

    def delay(self, arm: str | None) -> timedelta:
        """The trigger delay, or the arm's when it sets one (triggered campaigns)."""
        chosen = self.arm(arm)
        if chosen is not None and chosen.delay is not None:
            return chosen.delay
        return parse_duration(self.trigger.get("delay", "0"))

    def unless(self) -> tuple[str, ...]:
        """What drops an enrollment during the trigger delay; default [order],
        except for order_placed triggers (the order itself would drop them)."""
        if "unless" in self.trigger:
            return tuple(self.trigger["unless"])
        return () if self.trigger.get("event") == "order_placed" else ("order",)

    def offer_for(self, step: Step, arm: str | None) -> str | None:
        """A step's own offer (the discount cascade), else the arm's, else the campaign's."""
        chosen = self.arm(arm)
        return step.offer or (chosen.offer if chosen else None) or self.offer

    def first_due(self, entered_at: datetime, arm: str | None) -> datetime:
        delay = self.delay(arm) if self.kind == "triggered" else timedelta(0)
        return entered_at + delay + (self.steps[0].wait if self.steps else timedelta(0))

    def next_due(self, step_index: int, base: datetime) -> datetime | None:
        """When step ``step_index`` is due if the one before it happened at ``base``; None after the last."""
        if step_index >= len(self.steps):
            return None
        return base + self.steps[step_index].wait


def condition_holds(condition: str | None, outcomes: frozenset[str] | set[str] | None) -> bool:
    """A step's `if` on the previous message sent in this enrollment. Without a
    previous message (every earlier step skipped), "not X" holds."""
    if condition is None:
        return True
    return CONDITION_OUTCOME[condition] not in (outcomes or ())


def goal_reached(flow: Flow, last_order_at: datetime | None, entered_at: datetime) -> bool:
    """An order (the customer's latest, ``last_order_at``) after the entry and within the goal's window."""
    if flow.goal_within is None or last_order_at is None:
        return False
    return entered_at < last_order_at <= entered_at + flow.goal_within


def unless_happened(flow: Flow, last_order_at: datetime | None, facts, customer_id: int, entered_at: datetime) -> bool:
    for kind in flow.unless():
        if kind == "order":
            if last_order_at is not None and last_order_at > entered_at:
                return True
        else:
            seen = facts.latest_event(customer_id, kind)
            if seen is not None and seen > entered_at:
                return True
    return False


def channel_options(project: Project, step: Step) -> list[tuple[float, str, str, str]]:
    """(cost, channel name, kind, template) a step may use, cheapest first.
    A named channel gives one; "cheapest" every project channel of a kind the
    step has a template for."""
    if step.channel != "cheapest":
        channel = project.channels[step.channel]
        template = step.template or ""
        return [(message_cost(channel, template, step), channel.name, channel.kind, template)]
    options = [
        (message_cost(channel, step.templates[channel.kind], step), channel.name, channel.kind, step.templates[channel.kind])
        for channel in project.channels.values()
        if channel.kind in step.templates
    ]
    return sorted(options)


def message_cost(channel, template: str, step: Step) -> float:
    """The channel's cost for one message: per part for kind sms."""
    if channel.kind == "sms":
        return round(channel.cost * step.sms_parts.get(template, 1), 6)
    return channel.cost


def resolve_channel(project: Project, step: Step, reach: Mapping[str, str | None]) -> tuple[str, str, float] | str:
    """(channel, template, cost) for a customer, or the rule that held the
    step back (for "cheapest": the reason of its cheapest option). ``reach``:
    per channel kind of the project, why it cannot reach the customer (None:
    it can), from :func:`reach_of`."""
    reasons = []
    for cost, name, kind, template in channel_options(project, step):
        reason = reach[kind]
        if reason is None:
            return name, template, cost
        reasons.append(reason)
    return reasons[0] if reasons else "no_channel"


def reach_of(fact: CustomerFact | None, opted_out: Mapping[tuple[int, str], str], customer_id: int,
             kinds: Sequence[str]) -> tuple[str | None, ...]:
    """Per channel kind of ``kinds``, why it cannot reach the customer (None:
    it can): what state says keeps them off that kind ("unsubscribed",
    "address_invalid"; ``opted_out`` is planner.core.held_by_state), else no
    contact or consent in ``fact``."""
    return tuple(opted_out.get((customer_id, kind)) or ("no_contact" if fact is None else fact.reachable(kind)) for kind in kinds)
