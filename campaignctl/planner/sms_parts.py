"""SMS parts in the plan: an sms channel's cost is per part, so a message costs
parts x cost, with parts counted from each SMS template rendered for sample
customers (campaignctl.sms.estimate_sms_templates); a template whose sample
needs more parts than its ``max_parts`` is a violation."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Mapping, Sequence

from ..sms import SmsEstimate
from .cascades import Flow
from .plan import Violation

RULE = "sms_parts"


def price_flows(flows: Mapping[str, Flow], estimates: Sequence[SmsEstimate]) -> dict[str, Flow]:
    """The flows with every step knowing the parts of its SMS templates."""
    return {name: price_flow(flow, estimates) for name, flow in flows.items()}


def price_flow(flow: Flow | None, estimates: Sequence[SmsEstimate]) -> Flow | None:
    if flow is None or not estimates:
        return flow
    parts = MappingProxyType({estimate.template: estimate.parts for estimate in estimates})
    return replace(flow, steps=tuple(replace(step, sms_parts=parts) for step in flow.steps))


def templates_used(flow: Flow) -> set[str]:
    return {name for step in flow.steps for name in (step.template, *step.templates.values()) if name}


def used_estimates(flows: Mapping[str, Flow], estimates: Sequence[SmsEstimate]) -> tuple[SmsEstimate, ...]:
    """The estimates of templates some planned campaign uses, by template."""
    used = set().union(*(templates_used(flow) for flow in flows.values())) if flows else set()
    return tuple(sorted((e for e in estimates if e.template in used), key=lambda e: e.template))


def violations(flows: Mapping[str, Flow], estimates: Sequence[SmsEstimate]) -> list[Violation]:
    """One violation per enabled campaign and refused SMS template it uses."""
    found = []
    for estimate in estimates:
        if estimate.problem is None:
            continue
        for name, flow in sorted(flows.items()):
            if flow.enabled and estimate.template in templates_used(flow):
                numbers = {"parts": float(estimate.parts)}
                if estimate.max_parts is not None:
                    numbers["max_parts"] = float(estimate.max_parts)
                found.append(Violation(RULE, name, f"template {estimate.template}: {estimate.problem}", MappingProxyType(numbers)))
    return found
