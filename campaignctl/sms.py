"""SMS length as operators bill it: GSM 03.38 encoding detection and the split
into concatenated parts.

A text whose every character is in the GSM 7-bit default alphabet (or its
extension table) is sent as GSM-7: 160 septets in one message, 153 per part
once concatenated (a 6-octet user data header takes 7 septets). Anything else,
Cyrillic included, is sent as UCS-2: 70 UTF-16 code units in one message, 67
per part. Extension characters (``^{}\\[~]|€`` and form feed) cost two septets,
an escape and the character, and an emoji outside the Basic Multilingual Plane
is a surrogate pair; neither is ever cut in two across parts, because a phone
shows a broken half as garbage.

The channel's ``cost`` is per part for kind sms (schemas/v1/project.json), so
the plan's cost of an SMS is ``part_count(text) * cost``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .contracts import OutgoingMessage, SendResult

GSM7 = "gsm7"
UCS2 = "ucs2"

# GSM 03.38 default alphabet, in code order (0x00..0x7F); 0x1B is the escape to
# the extension table and is not a character of its own.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
# The extension table: character -> its code after the escape.
GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}

_BASIC_CODE = {char: code for code, char in enumerate(GSM7_BASIC) if code != ESCAPE}
_BASIC_CHAR = {code: char for char, code in _BASIC_CODE.items()}
_EXTENSION_CHAR = {code: char for char, code in GSM7_EXTENSION.items()}


@dataclass(frozen=True)
class Limits:
    single: int  # units in a message sent alone
    per_part: int  # units in each part of a concatenated message


LIMITS = {GSM7: Limits(160, 153), UCS2: Limits(70, 67)}
MAX_PARTS = 255  # the concatenation header counts parts in one octet


def encoding(text: str) -> str:
    """``"gsm7"`` when every character is in the GSM 03.38 alphabet or its
    extension table, else ``"ucs2"`` (one Cyrillic letter is enough)."""
    return GSM7 if all(char in _BASIC_CODE or char in GSM7_EXTENSION for char in text) else UCS2


def units(char: str, coding: str) -> int:
    """What one character costs: septets for GSM-7, UTF-16 code units for UCS-2."""
    if coding == GSM7:
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def length(text: str, coding: str | None = None) -> int:
    """The text's length in its encoding's units (septets or UTF-16 code units)."""
    coding = coding or encoding(text)
    return sum(units(char, coding) for char in text)


def parts(text: str) -> list[str]:
    """The texts of the parts the message is sent as, in order; joined they give
    ``text`` back. One part (possibly empty) when it fits a single message."""
    coding = encoding(text)
    limits = LIMITS[coding]
    if length(text, coding) <= limits.single:
        return [text]
    split, current, used = [], [], 0
    for char in text:  # a Python character is a whole escape pair or surrogate pair, so it is never cut
        cost = units(char, coding)
        if used + cost > limits.per_part:
            split.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += cost
    split.append("".join(current))
    return split


def part_count(text: str) -> int:
    """How many parts, each billed as one SMS, the text is sent as."""
    coding = encoding(text)
    limits = LIMITS[coding]
    total = length(text, coding)
    if total <= limits.single:
        return 1
    return len(parts(text))  # not total / per_part: a two-unit character never straddles a boundary


def encode_gsm7(text: str) -> bytes:
    """The text as unpacked GSM 03.38 septets, one per octet (how SMPP carries
    data_coding 0): extension characters as the escape and their code.
    ValueError names the first character outside the alphabet."""
    out = bytearray()
    for position, char in enumerate(text):
        if char in _BASIC_CODE:
            out.append(_BASIC_CODE[char])
        elif char in GSM7_EXTENSION:
            out += bytes((ESCAPE, GSM7_EXTENSION[char]))
        else:
            raise ValueError(f"character {char!r} at {position} is not in the GSM 03.38 alphabet")
    return bytes(out)


def decode_gsm7(septets: bytes) -> str:
    """Unpacked GSM 03.38 septets back to text (the inverse of encode_gsm7)."""
    chars, escaped = [], False
    for code in septets:
        if escaped:
            chars.append(_EXTENSION_CHAR.get(code, _BASIC_CHAR.get(code, " ")))  # an unknown extension shows as its base character
            escaped = False
        elif code == ESCAPE:
            escaped = True
        else:
            chars.append(_BASIC_CHAR[code & 0x7F])
    return "".join(chars)


def encode(text: str) -> bytes:
    """The text's bytes on the wire in its own encoding: GSM-7 septets or UTF-16BE."""
    return encode_gsm7(text) if encoding(text) == GSM7 else text.encode("utf-16-be")


# --------------------------------------------------------------------------- plan-time checks


@dataclass(frozen=True)
class SmsProblem:
    """Why a rendered SMS template is refused at plan time."""

    parts: int
    max_parts: int | None
    encoding: str
    message: str


def check_sms_template(rendered_text: str, max_parts: int | None) -> SmsProblem | None:
    """None when the rendered text may be sent, else what is wrong and what to
    do: an empty text, or more parts than ``max_parts`` (None: only the
    protocol's 255)."""
    coding = encoding(rendered_text)
    count = part_count(rendered_text)
    if not rendered_text.strip():
        return SmsProblem(count, max_parts, coding, "the SMS text is empty; write a body or drop the step")
    limit = min(max_parts, MAX_PARTS) if max_parts is not None else MAX_PARTS
    if count <= limit:
        return None
    hint = _shorten_hint(rendered_text, coding, limit)
    return SmsProblem(
        count, max_parts, coding,
        f"the SMS is {count} parts ({length(rendered_text, coding)} {_unit_name(coding)}, {coding}), over the limit of {limit}; {hint}",
    )


# E.164: a country code and up to 15 digits; spaces, dashes, dots and brackets people write are dropped.
PHONE = re.compile(r"^\+?[1-9][0-9]{6,14}$")
PHONE_PUNCTUATION = re.compile(r"[\s().-]")


def sms_to_send(message: OutgoingMessage) -> tuple[str, str] | SendResult:
    """The number (E.164, punctuation dropped) and the text of an SMS channel's
    message, or its permanent failure when it cannot be an SMS."""
    from .contracts import SendResult

    to = PHONE_PUNCTUATION.sub("", message.to or "")
    if not PHONE.match(to):
        return SendResult(message.key, "permanent_failure", error="not a phone number (E.164, e.g. +79001234567)")
    text = message.parts.get("body") or message.parts.get("text") or ""
    if problem := check_sms_template(text, None):
        return SendResult(message.key, "permanent_failure", error=problem.message)
    return to, text


def _unit_name(coding: str) -> str:
    return "septets" if coding == GSM7 else "UTF-16 code units"


def _shorten_hint(text: str, coding: str, limit: int) -> str:
    limits = LIMITS[coding]
    fits = limits.single if limit == 1 else limits.per_part * limit
    hint = f"shorten it to at most {fits} {_unit_name(coding)}"
    if coding == UCS2:
        foreign = sorted({char for char in text if char not in _BASIC_CODE and char not in GSM7_EXTENSION})
        shown = "".join(foreign[:10])
        hint += f" (characters outside GSM-7, e.g. {shown!r}, make it UCS-2: 70 per message, 67 per part)"
    return hint + " or raise the template's max_parts"


@dataclass(frozen=True)
class SmsEstimate:
    """What one SMS template takes at plan time, from its text rendered for a
    sample of customers: the plan charges ``parts`` x the channel's cost per
    message, and refuses to apply when ``problem`` is set."""

    template: str
    parts: int  # the most parts any sample needed
    encoding: str  # of that longest sample
    max_parts: int | None  # the template's limit, None for the protocol's 255
    problem: str | None = None  # what the first refused sample showed, and what to do


def estimate_sms_template(template: str, rendered_samples: Iterable[str], max_parts: int | None) -> SmsEstimate:
    """Parts of a template from its text rendered for sample customers: the plan
    cannot render for every customer, so the longest sample stands for all.
    ValueError when there are no samples."""
    samples = list(rendered_samples)
    if not samples:
        raise ValueError(f"template {template!r}: no rendered sample to count SMS parts from")
    longest = max(samples, key=lambda text: (part_count(text), length(text)))
    problem = next((found for text in samples if (found := check_sms_template(text, max_parts)) is not None), None)
    return SmsEstimate(template, part_count(longest), encoding(longest), max_parts, problem.message if problem else None)


def estimate_sms_templates(project, samples: Mapping[str, Iterable[str]]) -> tuple[SmsEstimate, ...]:
    """An estimate for every sms template of ``project`` that ``samples``
    (template -> its body rendered for sample customers) has texts for, with
    the template's own ``max_parts``; sorted by template."""
    estimates = []
    for name in sorted(samples):
        template = project.templates.get(name)
        if template is None or template.channel != "sms":
            continue
        limit = template.spec.get("max_parts")
        estimates.append(estimate_sms_template(name, samples[name], int(limit) if limit is not None else None))
    return tuple(estimates)
