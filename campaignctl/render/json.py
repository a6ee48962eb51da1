"""A plan as JSON: the same document ``Plan.from_json`` reads back."""

from __future__ import annotations

from ..planner.plan import Plan


def render_json(plan: Plan, indent: int | None = 2) -> str:
    return plan.to_json(indent=indent) + "\n"
