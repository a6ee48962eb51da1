"""Rows: a plan's enrollments and messages kept as columns behave as the tuple of their rows."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone

import pytest

from campaignctl.planner import MessageAction, Plan
from campaignctl.planner.plan import Rows, column

NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)


def message(customer_id: int, channel: str = "email", cost: float = 0.5, offer: str | None = None) -> MessageAction:
    return MessageAction(f"welcome/v1/{customer_id}/0/-", "welcome", "v1", customer_id, 0, channel, "welcome_email", offer, cost, NOW)


def as_rows(messages: list[MessageAction]) -> Rows:
    return Rows(MessageAction, [[getattr(m, f.name) for m in messages] for f in fields(MessageAction)])


def test_rows_read_like_the_tuple_of_their_rows():
    messages = [message(3), message(1, "sms", 1.25, "ten_off"), message(2)]
    rows = as_rows(messages)
    assert rows == tuple(messages) and tuple(messages) == rows
    assert rows != tuple(messages[:2]) and rows != tuple(reversed(messages))
    assert len(rows) == 3 and rows[1] == messages[1] and rows[-1] == messages[2]
    assert rows[1:] == tuple(messages[1:]) and isinstance(rows[1:], tuple)
    assert list(rows) == messages and hash(rows) == hash(tuple(messages))
    assert rows[1].offer == "ten_off" and rows[1].due_at == NOW
    with pytest.raises(IndexError):
        rows[3]


def test_take_concat_and_of_keep_every_field():
    messages = [message(3), message(1, "sms", 1.25), message(2)]
    rows = Rows.of(MessageAction, messages)
    assert rows.take([1, 2, 0]) == (messages[1], messages[2], messages[0])
    assert rows.take([2]) == (messages[2],) and rows.take([]) == ()
    assert Rows.concat(MessageAction, [rows, Rows.of(MessageAction, ()), rows.take([0])]) == tuple(messages + messages[:1])
    assert column(rows, "cost") == [0.5, 1.25, 0.5] == column(tuple(messages), "cost")


def test_columns_of_unequal_length_are_refused():
    with pytest.raises(ValueError, match="equal length"):
        Rows(MessageAction, [[1]] + [[]] * 10)


def test_a_plan_with_rows_writes_the_json_of_one_with_tuples_and_reads_back_equal():
    messages = [message(2, "sms", 1.25, "ten_off"), message(5)]
    kept = Plan(1, "demo", "EUR", "Europe/Berlin", NOW, "f", messages=Rows.of(MessageAction, messages))
    plain = Plan(1, "demo", "EUR", "Europe/Berlin", NOW, "f", messages=tuple(messages))
    assert kept.to_json() == plain.to_json()
    assert Plan.from_json(kept.to_json()) == kept == plain
    assert kept.messages_by_channel() == {"email": (1, 0.5), "sms": (1, 1.25)}
    assert kept.messages_by_campaign() == {"welcome": {"email": (1, 0.5), "sms": (1, 1.25)}}
    assert kept.messages_cost == 1.75
