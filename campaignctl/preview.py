"""Preview: one campaign step rendered for one real customer, each part written
to a file, and the HTML optionally photographed by headless Chromium at a
desktop and a mobile width, so a reviewer sees what the customer would see.

The browser is Debian's (``/usr/bin/chromium``, or ``$CAMPAIGNCTL_CHROMIUM``),
never downloaded; it runs with networking features off and a throwaway
profile. Remote images in the e-mail do not load without network access."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping

from .model import Campaign, CascadeStep, Project
from .planner.plan import MessageAction

PART_FILES = {
    "subject": "subject.txt", "preheader": "preheader.txt", "html": "index.html", "text": "text.txt", "amp": "amp.html",
    "title": "title.txt", "body": "body.txt", "url": "url.txt", "button": "button.txt",
}
SCREEN_WIDTHS = {"desktop": (1200, 1600), "mobile": (375, 1400)}  # (width, height) of the browser window
CHROMIUM = "/usr/bin/chromium"
BROWSER_TIMEOUT = 90  # seconds for one screenshot


class PreviewError(Exception):
    """The preview cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class Preview:
    campaign: str
    customer_id: int
    step: int
    channel: str
    template: str
    files: Mapping[str, Path]  # part -> file written
    screenshots: Mapping[str, Path]  # desktop/mobile -> PNG

    def to_dict(self) -> dict:
        return {
            "campaign": self.campaign, "customer_id": self.customer_id, "step": self.step, "channel": self.channel,
            "template": self.template, "files": {part: str(path) for part, path in self.files.items()},
            "screenshots": {name: str(path) for name, path in self.screenshots.items()},
        }


def render_preview(
    project: Project, campaign_name: str, customer_id: int, out_dir: Path, *, channel: str | None = None, step: int = 0,
    now: datetime, screenshot: bool = False, environ: Mapping[str, str] | None = None,
) -> Preview:
    """Render ``campaign_name``'s step ``step`` for one customer into ``out_dir``."""
    from .connect import open_data_source
    from .executor import load_last_orders, load_profiles, message_context
    from .issuing import sample_code
    from .templates import MessageRenderer, RenderError

    campaign = _campaign(project, campaign_name)
    chosen = _step(project, campaign, step)
    channel_name, template = _template_for(project, chosen, channel)
    message = MessageAction(
        f"preview/{campaign.name}/{customer_id}/{step}", campaign.name, "preview", customer_id, step, channel_name, template,
        chosen.offer or campaign.offer, 0.0, now,
    )
    source = open_data_source(project, environ)
    try:
        profile = load_profiles(project, source, [customer_id]).get(customer_id)
        if profile is None:
            raise PreviewError(f"customer {customer_id} is not in the customers table of the data source")
        last_order = load_last_orders(project, source, [customer_id], now).get(customer_id)
    finally:
        source.close()
    try:
        context = message_context(project, message, profile, now, last_order, promo_code=sample_code(project, message.offer))
        parts = MessageRenderer(project).render(template, context)
    except RenderError as exc:
        raise PreviewError(str(exc)) from exc
    files = _write_parts(parts, out_dir)
    shots = take_screenshots(files["html"], out_dir) if screenshot and "html" in files else {}
    if screenshot and "html" not in files:
        raise PreviewError(f"template {template!r} has no HTML part to photograph; leave out --screenshot")
    return Preview(campaign.name, customer_id, step, channel_name, template, files, shots)


def _campaign(project: Project, name: str) -> Campaign:
    if name not in project.campaigns:
        from difflib import get_close_matches

        close = get_close_matches(name, list(project.campaigns), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; campaigns: {', '.join(sorted(project.campaigns))}"
        raise PreviewError(f"no campaign {name!r}{hint}")
    return project.campaigns[name]


def _step(project: Project, campaign: Campaign, number: int) -> CascadeStep:
    steps = project.cascades[campaign.cascade].steps if campaign.cascade else (campaign.message,) if campaign.message else ()
    if not 0 <= number < len(steps):
        raise PreviewError(f"campaign {campaign.name!r} has {len(steps)} step(s); --step takes 0 to {len(steps) - 1}")
    return steps[number]


def _template_for(project: Project, step: CascadeStep, channel: str | None) -> tuple[str, str]:
    """(channel name, template name) of the step, for ``channel`` when given."""
    if step.template:  # a fixed channel
        if channel and channel != step.channel:
            raise PreviewError(f"this step sends by {step.channel}, not {channel}; leave out --channel")
        return step.channel, step.template
    by_kind = dict(step.templates)
    if channel:
        if channel not in project.channels:
            raise PreviewError(f"no channel {channel!r}; channels: {', '.join(sorted(project.channels))}")
        kind = project.channels[channel].kind
        if kind not in by_kind:
            raise PreviewError(f"this step has no template for {kind}; it has: {', '.join(sorted(by_kind))}")
        return channel, by_kind[kind]
    kind = "email" if "email" in by_kind else sorted(by_kind)[0]
    name = next((n for n, c in sorted(project.channels.items()) if c.kind == kind), kind)
    return name, by_kind[kind]


def _write_parts(parts: Mapping[str, str], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, text in sorted(parts.items()):
        path = out_dir / PART_FILES.get(part, f"{part}.txt")
        path.write_text(text, "utf-8")
        files[part] = path
    return files


def chromium() -> str:
    browser = os.environ.get("CAMPAIGNCTL_CHROMIUM") or CHROMIUM
    if not (Path(browser).is_file() and os.access(browser, os.X_OK)) and not shutil.which(browser):
        raise PreviewError(f"no Chromium at {browser}: install Debian's (apt-get install chromium) or set CAMPAIGNCTL_CHROMIUM")
    return browser


def take_screenshots(html_file: Path, out_dir: Path) -> dict[str, Path]:
    """desktop.png and mobile.png of ``html_file`` by headless Chromium."""
    browser = chromium()
    shots = {}
    for name, (width, height) in SCREEN_WIDTHS.items():
        png = out_dir / f"{name}.png"
        png.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="campaignctl-chromium-") as profile:
            command = [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--screenshot={png.resolve()}", f"--window-size={width},{height}", html_file.resolve().as_uri(),
            ]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise PreviewError(f"Chromium took longer than {BROWSER_TIMEOUT}s for the {name} screenshot") from exc
        if not png.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PreviewError(f"Chromium made no {name} screenshot (exit {done.returncode}): {last}")
        shots[name] = png
    return shots
