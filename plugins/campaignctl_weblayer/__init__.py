"""Built-in channel plugin ``web_layer``: a web_layer message becomes a pop-up rule the
retailer's site shows (campaignctl.weblayer; served by campaignctl.weblayer_app).

Options (``channels.<name>.options``)::

    path: out/web_layer          # where the rules are published (relative to the project)
    secret: ${env:WEBLAYER_SECRET}  # visitor tokens and event signatures
    trigger: load                # load | exit | delay (with seconds: N)
    per_session: 1               # caps, kept by the snippet in the browser
    per_day: 1
    priority: 0
    ttl_days: 7
    campaigns:                   # per-campaign overrides of the five above
      game: {trigger: exit, priority: 10}

"Sending" is publishing: a message is sent once its rule is on disk, and
publishing it again replaces it by key, so it cannot duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from campaignctl.contracts import OutgoingMessage, SendResult
from campaignctl.hookspecs import hookimpl
from campaignctl.model import Channel
from campaignctl.options import checked_options, project_path
from campaignctl.weblayer import Display, RulesDirectory, make_layer, utc_now

__version__ = "0.1.0"

DISPLAY_OPTIONS = ("trigger", "seconds", "per_session", "per_day", "priority", "ttl_days")
OPTIONS = ("path", "secret", "campaigns", *DISPLAY_OPTIONS)


@dataclass
class WebLayerSender:
    rules: RulesDirectory
    display: Display
    campaign_display: Mapping[str, Display] = field(default_factory=dict)
    clock: Callable[[], datetime] = utc_now

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "WebLayerSender":
        options = checked_options(channel.options, OPTIONS, f"channel {channel.name!r} (weblayer)")
        if not options.get("secret"):
            raise ValueError(f"channel {channel.name!r} (weblayer): set options.secret, e.g. secret: ${{env:WEBLAYER_SECRET}}")
        path = project_path(options.get("path", f"out/{channel.name}"), project_root)
        defaults = {name: options[name] for name in DISPLAY_OPTIONS if name in options}
        display = Display.from_options(defaults, f"channels.{channel.name}.options")
        per_campaign = {
            campaign: Display.from_options({**defaults, **dict(overrides)}, f"channels.{channel.name}.options.campaigns.{campaign}")
            for campaign, overrides in dict(options.get("campaigns") or {}).items()
        }
        return cls(RulesDirectory(path, str(options["secret"])), display, per_campaign)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        now = self.clock()
        results: dict[str, SendResult] = {}
        by_customer: defaultdict[str, list] = defaultdict(list)
        for message in messages:
            try:
                layer = make_layer(self.rules.secret, message.key, message.campaign, message.parts,
                                   self.campaign_display.get(message.campaign, self.display), now)
            except ValueError as exc:
                results[message.key] = SendResult(message.key, "permanent_failure", error=str(exc))
                continue
            by_customer[message.customer_id].append(layer)
        for customer_id, layers in by_customer.items():
            try:
                self.rules.publish(customer_id, layers, now)
            except OSError as exc:  # the disk: worth another try
                results.update((layer.key, SendResult(layer.key, "temporary_failure", error=f"{type(exc).__name__}: {exc}")) for layer in layers)
                continue
            results.update((layer.key, SendResult(layer.key, "sent", provider_id=f"weblayer:{layer.key}")) for layer in layers)
        return [results[message.key] for message in messages]

    def lookup(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Whether a layer is published, for settling a crashed apply. The
        customer is the third part of a message key (planner.hashing.message_key);
        a key of another shape is left out, so it stays in doubt."""
        found: dict[str, str | None] = {}
        for key in keys:
            parts = key.split("/")
            if len(parts) == 5:
                found[key] = f"weblayer:{key}" if key in self.rules.keys(parts[2]) else None
        return found

    def close(self) -> None:
        """Nothing is held open."""


@hookimpl
def register_channels(register: Callable[[str, Any], None]) -> None:
    register("web_layer", WebLayerSender.from_config)
