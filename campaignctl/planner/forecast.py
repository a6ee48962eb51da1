"""Messages per day (project time zone) and channel for the next 7 days.

What is known is counted, as an upper bound: the messages of this plan (today),
every later cascade step of active treatment enrollments as the plan leaves
them (deferred ones at their new time; each step's `if` assumed to hold and no
goal reached), and broadcasts scheduled inside the horizon. Future trigger
entries and newcomers to recurring campaigns are not guessed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

from .cascades import Flow, Step
from .plan import ForecastCell

HORIZON_DAYS = 7


@dataclass
class Forecast:
    project: object
    now: datetime
    resolve: Callable[[Step, int], tuple[str, str, float] | str]  # (step, customer) -> channel or why none; the planner's, memoised
    cells: dict[tuple[date, str], list] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.project.timezone)
        self.today = self.now.astimezone(self.zone).date()
        self.days = [self.today + timedelta(days=i) for i in range(HORIZON_DAYS)]
        self.end = datetime.combine(self.days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=self.zone)

    def add(self, at: datetime, channel: str, cost: float, count: int = 1) -> None:
        day = max(at, self.now).astimezone(self.zone).date()
        if day in self.days:
            cell = self.cells[(day, channel)]
            cell[0] += count
            cell[1] += cost * count

    def cascade(self, flow: Flow, customer_id: int, step: int, due: datetime | None, count: int = 1) -> None:
        """Every step from ``step`` on, from ``due``, while inside the horizon;
        ``count`` customers who reach the same channels as ``customer_id``."""
        while due is not None and step < len(flow.steps) and due < self.end:
            resolved = self.resolve(flow.steps[step], customer_id)
            if not isinstance(resolved, str):
                self.add(due, resolved[0], resolved[2], count)
            due = flow.next_due(step + 1, max(due, self.now))
            step += 1

    def result(self) -> tuple[ForecastCell, ...]:
        return tuple(
            ForecastCell(day, channel, count, round(cost, 6))
            for (day, channel), (count, cost) in sorted(self.cells.items())
        )

    def in_month(self) -> float:
        """Forecast cost of days in the current calendar month, today included."""
        return sum(cost for (day, _), (_, cost) in self.cells.items() if (day.year, day.month) == (self.today.year, self.today.month))
