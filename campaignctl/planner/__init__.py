"""Plan: what apply would do, as data. ``plan(project, audiences, state, now, facts)``."""

from .core import plan
from .hashing import (
    arm_of,
    assignment,
    campaign_definition,
    campaign_versions,
    definition_version,
    group_of,
    message_key,
    window_of,
)
from .plan import (
    FORMAT_VERSION,
    CampaignAudience,
    CampaignChange,
    Deferral,
    EnrollmentAction,
    ForecastCell,
    HeldBack,
    MessageAction,
    OfferForecast,
    Plan,
    Violation,
)
from .snapshot import SentMessage, SnapshotEnrollment, StateSnapshot

__all__ = [
    "FORMAT_VERSION",
    "CampaignAudience",
    "CampaignChange",
    "Deferral",
    "EnrollmentAction",
    "ForecastCell",
    "HeldBack",
    "MessageAction",
    "OfferForecast",
    "Plan",
    "SentMessage",
    "SnapshotEnrollment",
    "StateSnapshot",
    "Violation",
    "arm_of",
    "assignment",
    "campaign_definition",
    "campaign_versions",
    "definition_version",
    "group_of",
    "message_key",
    "plan",
    "window_of",
]
