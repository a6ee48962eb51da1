"""Plan-time template check: every template the plan would send is checked
against the fields the data source really has and rendered for a sample of its
recipients, so a missing field fails the plan, not the send.

Three checks per template, each a plan violation naming the template file:
- ``customer.X`` (or ``customer["X"]``) where the customers table has no X,
  found in the template's syntax tree, whichever branch a sample takes;
- rendering for up to ``SAMPLE_SIZE`` recipients, evenly spaced through the
  plan's messages of that template (deterministic, spread over the audience):
  the first RenderError;
- the rendered AMP part against the AMP for Email rules (campaignctl.amp).

The sample's profiles are read with only the customers fields the templates
read (:func:`fields_read`; every field when one reads ``customer`` whole):
the scan of the customers table reads each column asked for in full.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from typing import Iterable, Mapping, Sequence

import numpy as np
from jinja2 import nodes

from .contracts import DataSource
from .datacontract import CONTRACT
from .model import Project
from .planner.plan import MessageAction, Plan, Violation, column
from .templates import MessageRenderer, RenderError

SAMPLE_SIZE = 20
RULE = "template"
DERIVED_FIELDS = {"loyalty_percent": ("loyalty_tier",)}  # customer fields executor.message_context adds, and what from
CUSTOMER_FIELDS = frozenset(CONTRACT["customers"]) | frozenset(DERIVED_FIELDS)


def check_plan_templates(project: Project, source: DataSource, the_plan: Plan, *, sample_size: int = SAMPLE_SIZE,
                         renderer: MessageRenderer | None = None) -> Plan:
    """``the_plan`` with a violation for every template that fails for its sample."""
    from .executor import profile_fields  # executor calls this module: import on use

    samples = _samples(the_plan.messages, sample_size)
    if not samples:
        return the_plan
    renderer = renderer or MessageRenderer(project)
    profiles, last_orders = _sample_data(project, source, renderer, samples, the_plan.now)
    known = {*profile_fields(project, source), *DERIVED_FIELDS}  # the profiles read hold only the fields the templates read
    violations = []
    for name, sample in sorted(samples.items()):
        violations += _check_template(project, renderer, name, sample, profiles, last_orders, known, the_plan)
    if not violations:
        return the_plan
    ordered = sorted(the_plan.violations + tuple(violations), key=lambda v: (v.rule, v.campaign or "", v.message))
    return replace(the_plan, violations=tuple(ordered))


def audience_bodies(project: Project, source: DataSource, audiences, now: datetime, channel: str = "sms", *,
                    sample_size: int = SAMPLE_SIZE, renderer: MessageRenderer | None = None) -> dict[str, list[str]]:
    """template -> its ``body`` rendered for a sample of the audience of every
    campaign whose steps may send it on a channel of kind ``channel``, with
    the step's offer (each arm's): SMS parts are counted from these *before*
    planning, so the plan prices every SMS, and chooses "cheapest", once."""
    from .planner.cascades import Flow
    from .planner.hashing import campaign_versions

    kinds = {name: c.kind for name, c in project.channels.items()}
    samples: dict[str, list[MessageAction]] = defaultdict(list)
    for name, (version, definition) in sorted(campaign_versions(project).items()):
        flow = Flow.from_definition(name, version, definition)
        members = audiences.members.get(flow.audience)
        if members is None or not len(members):
            continue
        stride = max(1, len(members) // sample_size)  # spread over the (sorted) audience, the same every run
        customers = [int(c) for c in members[::stride][:sample_size]]
        for step in flow.steps:
            if step.channel == "cheapest":
                templates = [t for kind, t in step.templates.items() if kind == channel]
            else:
                templates = [step.template] if kinds.get(step.channel) == channel and step.template else []
            offers = sorted({flow.offer_for(step, arm.name) for arm in flow.arms} or {flow.offer_for(step, None)}, key=str)
            for template in templates:
                for offer in offers:
                    samples[template] += [MessageAction(f"{name}/{version}/{c}/{step.index}/sample", name, version, c, step.index,
                                                        channel, template, offer, 0.0, now) for c in customers]
    return _render_bodies(project, source, {name: found[:sample_size * 4] for name, found in samples.items()}, now, channel,
                          renderer or MessageRenderer(project))


def campaign_templates(project: Project) -> set[str]:
    """The templates some campaign's steps may send."""
    steps = []
    for campaign in project.campaigns.values():
        if campaign.message:
            steps.append(campaign.message)
        elif campaign.cascade in project.cascades:
            steps.extend(project.cascades[campaign.cascade].steps)
    return {name for step in steps for name in (step.template, *step.templates.values()) if name in project.templates}


def _render_bodies(project: Project, source: DataSource, samples: Mapping[str, Sequence[MessageAction]], now: datetime,
                   channel: str, renderer: MessageRenderer) -> dict[str, list[str]]:
    """template -> the ``body`` of each sample message that renders (one that
    does not is left out: check_plan_templates reports it)."""
    from .executor import message_context
    from .issuing import sample_code

    samples = {name: sample for name, sample in samples.items()
               if name in project.templates and project.templates[name].channel == channel and sample}
    if not samples:
        return {}
    profiles, last_orders = _sample_data(project, source, renderer, samples, now)
    bodies: dict[str, list[str]] = defaultdict(list)
    for name, sample in sorted(samples.items()):
        for m in sample:
            if m.customer_id not in profiles:
                continue
            try:
                context = message_context(project, m, profiles[m.customer_id], now, last_orders.get(m.customer_id),
                                          promo_code=sample_code(project, m.offer))
                bodies[name].append(renderer.render(name, context).get("body", ""))
            except RenderError:
                continue
    return {name: texts for name, texts in bodies.items() if texts}


def _sample_data(project: Project, source: DataSource, renderer: MessageRenderer, samples: Mapping[str, Sequence[MessageAction]],
                 now: datetime) -> tuple[dict[int, dict], dict[int, dict]]:
    """The profiles of the sampled recipients, and the latest orders of those
    whose template reads ``order``: a scan of every order is spent only where
    a template shows one (an order confirmation)."""
    from .executor import load_last_orders, load_profiles  # executor calls this module: import on use

    recipients = sorted({m.customer_id for sample in samples.values() for m in sample})
    with_orders = order_recipients(renderer, [m for sample in samples.values() for m in sample])
    return (load_profiles(project, source, recipients, fields_read(renderer, samples)),
            load_last_orders(project, source, with_orders, now) if with_orders else {})


def order_recipients(renderer: MessageRenderer, messages: Sequence[MessageAction]) -> list[int]:
    """The customers of ``messages`` whose template shows their latest order
    (an order confirmation): only theirs are worth reading, as each chunk of
    customers costs a scan of every order."""
    showing = {name for name in {m.template for m in messages} if renderer.reads(name, "order")}
    return sorted({m.customer_id for m in messages if m.template in showing})


def _samples(messages: Sequence[MessageAction], size: int) -> dict[str, list[MessageAction]]:
    """template -> up to ``size`` of its messages, evenly spaced through the
    plan's order (campaign, then customer): the same every run and spread over
    the audience. Read from the plan's columns: only the sampled messages
    become objects."""
    templates = column(messages, "template")
    code = {name: index for index, name in enumerate(dict.fromkeys(templates))}
    codes = np.fromiter((code[name] for name in templates), dtype=np.int64, count=len(templates))
    found = {}
    for name, index in code.items():
        positions = np.flatnonzero(codes == index)
        stride = max(1, len(positions) // size)
        found[name] = [messages[position] for position in positions[::stride][:size].tolist()]
    return found


def _check_template(
    project: Project, renderer: MessageRenderer, name: str, sample: list[MessageAction], profiles: Mapping[int, dict],
    last_orders: Mapping[int, dict], known: set[str], the_plan: Plan,
) -> list[Violation]:
    """``known``: the customers fields the data source has."""
    from .executor import message_context
    from .issuing import sample_code

    try:
        parts = renderer.parts(name)
    except RenderError as exc:
        return [_violation(sample[0].campaign, exc)]
    contexts = [
        (m, message_context(project, m, profiles[m.customer_id], the_plan.now, last_orders.get(m.customer_id),
                            promo_code=sample_code(project, m.offer)))
        for m in sample if m.customer_id in profiles
    ]
    if not contexts:
        return []  # none of the sample has a profile any more; apply reports each as undeliverable
    for part in sorted(parts):
        missing = sorted(customer_fields(renderer, name, part) - known)
        if missing:
            file = renderer.source_file(name, part)
            return [Violation(RULE, sample[0].campaign, f"template {name!r} ({file}) uses customer.{missing[0]}, "
                              f"which the customers table of the data source does not have"
                              f" (it has: {', '.join(sorted(known))})")]
    for m, context in contexts:
        try:
            rendered = renderer.render(name, context)
        except RenderError as exc:
            return [_violation(m.campaign, exc, m.customer_id)]
        if "amp" in rendered:
            problems = _amp_problems(renderer, name, rendered["amp"])
            if problems:
                return [Violation(RULE, m.campaign, f"template {name!r}: the AMP part rendered for customer {m.customer_id} "
                                  f"breaks the AMP for Email rules: {problems}")]
    return []


def customer_fields(renderer: MessageRenderer, name: str, part: str) -> set[str]:
    """The ``customer.X`` / ``customer["X"]`` names a part reads."""
    return {field for node in renderer.syntax_tree(name, part).find_all((nodes.Getattr, nodes.Getitem))
            if (field := _customer_field(node)) is not None}


def fields_read(renderer: MessageRenderer, templates: Iterable[str]) -> set[str] | None:
    """The customers fields rendering ``templates`` reads, with those a derived
    field comes from; None (every field) when one reads ``customer`` other
    than field by field (a loop over it, a filter, a method) or does not compile."""
    fields: set[str] = set()
    for name in templates:
        try:
            parts = renderer.parts(name)
        except RenderError:
            return None
        for part in parts:
            tree = renderer.syntax_tree(name, part)
            read = [field for node in tree.find_all((nodes.Getattr, nodes.Getitem)) if (field := _customer_field(node)) is not None]
            whole = sum(1 for node in tree.find_all(nodes.Name) if node.name == "customer")
            if whole > len(read) or not set(read) <= CUSTOMER_FIELDS:
                return None
            fields.update(read)
    return fields | {source for field in fields for source in DERIVED_FIELDS.get(field, ())}


def _customer_field(node: nodes.Getattr | nodes.Getitem) -> str | None:
    """X for ``customer.X`` and ``customer["X"]``, else None."""
    if not (isinstance(node.node, nodes.Name) and node.node.name == "customer"):
        return None
    if isinstance(node, nodes.Getattr):
        return node.attr
    return node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None


def _amp_problems(renderer: MessageRenderer, name: str, amp: str) -> str:
    from .amp import check_amp

    found = check_amp(amp, renderer.source_file(name, "amp") or "amp")
    return "; ".join(f"line {d.location.line}: {d.message}" for d in found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")


def _violation(campaign: str, exc: RenderError, customer_id: int | None = None) -> Violation:
    whom = f" for customer {customer_id}" if customer_id is not None else ""
    return Violation(RULE, campaign, f"{exc}{whom} (fix the template, or the data, before apply sends it)")
