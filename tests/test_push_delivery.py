"""Each push channel through campaignctl.delivery.deliver with a SQLite ledger
while its peer answers 429 with Retry-After, 5xx and hangs for a while:
nothing is lost, nothing is sent twice (counted at the peer), Retry-After is
waited for, and a gone address leaves a "bounced" outcome. A request that hung
after it was sent whole is in doubt (the provider may have it): it is never
re-sent until a person settles it, and then it goes exactly once."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from contract.push_peers import Hang, apns_peer, device_token, fcm_peer, web_push_options, web_push_peer
from test_push_channels import open_channel, push

from campaignctl import plugins
from campaignctl.delivery import FAILED_PERMANENT, IN_DOUBT, SENT, Backoff, DueMessage, deliver
from campaignctl.model import PluginConfig
from campaignctl.state import MessageStatus

FAULTS = [
    (429, {"Retry-After": "3"}, {"error": "quota"}), (429, {"Retry-After": "3"}, {"error": "quota"}),
    (500, {}, {"error": "internal"}), (503, {}, {"error": "unavailable"}), (502, {}, b""),
    Hang(1.0), Hang(1.0),
]


@pytest.fixture
def store(tmp_path):
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    yield store
    store.close()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run(store, sender, messages, peer):
    peer.faults.extend(FAULTS)
    sleeps = Sleeps()
    due = [DueMessage(m, step=0, cost=0.01) for m in messages]
    report = deliver(store, {"push": sender}, due, batch_size=7, max_attempts=6, backoff=Backoff(0.5, 2, 10), sleep=sleeps)
    rerun = deliver(store, {"push": sender}, due, sleep=sleeps)
    time.sleep(1.5)  # a person asks the provider later: a request it was still working on at the time-out is recorded by then
    never_arrived = [key for key in report.in_doubt if key not in peer.accepted]
    store.resolve_in_doubt(settle(report.in_doubt, peer.accepted))
    settled = deliver(store, {"push": sender}, due, sleep=sleeps)
    sender.close()
    return report, rerun, settled, never_arrived, sleeps


def settle(in_doubt, accepted) -> dict:
    """What a person does with keys in doubt: asks the provider. The peer's
    record says which it took (a slow answer on a busy machine) and which it
    never did (the hangs)."""
    return {key: ("found-at-provider" if key in accepted else None) for key in in_doubt}


def check(report, rerun, settled, never_arrived, sleeps, peer, store, messages, gone_key):
    wanted = sorted(m.key for m in messages if m.key != gone_key)
    hangs = sum(1 for fault in FAULTS if isinstance(fault, Hang))
    # Each request the peer hung on is in doubt, never sent again blindly; over
    # HTTP/2 (APNs) the other streams of the connection a time-out closed are
    # in doubt too, and some of those the peer did take: settling finds them.
    assert len(never_arrived) >= hangs
    assert report.counts["push"][SENT] + report.counts["push"][IN_DOUBT] == len(wanted) and report.counts["push"][FAILED_PERMANENT] == 1
    assert rerun.total("already_sent") == report.counts["push"][SENT] and rerun.total(IN_DOUBT) == len(report.in_doubt)
    assert settled.total(SENT) == len(never_arrived) and not settled.in_doubt
    assert sorted(peer.accepted) == wanted  # each delivered message reached the peer exactly once
    assert Counter(peer.accepted).most_common(1)[0][1] == 1
    assert not peer.faults  # every fault was met
    assert sleeps[0] >= 3  # the provider's Retry-After (3 s) was waited for; the backoff alone would wait 0.25-0.5 s
    rows = {row.key: row.status for row in store.messages([m.key for m in messages])}
    assert rows[gone_key] == MessageStatus.FAILED_PERMANENT
    assert [o.type for o in store.outcomes(gone_key)] == ["bounced"]
    assert store.outcomes(gone_key)[0].payload["address_invalid"] is True


def test_fcm_under_faults_delivers_each_message_once(store, tmp_path):
    with fcm_peer() as peer:
        messages = [push(n, f"tok-{n}") for n in range(20)] + [push(99, "gone-99")]
        sender = open_channel("fcm", peer.options(tmp_path, timeout=0.5, concurrency=4), tmp_path)
        report, rerun, settled, never_arrived, sleeps = run(store, sender, messages, peer)
    check(report, rerun, settled, never_arrived, sleeps, peer, store, messages, messages[-1].key)


def test_apns_under_faults_delivers_each_message_once(store, tmp_path):
    with apns_peer(tmp_path) as peer:
        messages = [push(n, device_token(n)) for n in range(20)] + [push(99, "gone99")]
        sender = open_channel("apns", peer.options(tmp_path, timeout=0.5, concurrency=4), tmp_path)
        report, rerun, settled, never_arrived, sleeps = run(store, sender, messages, peer)
    check(report, rerun, settled, never_arrived, sleeps, peer, store, messages, messages[-1].key)


def test_web_push_under_faults_delivers_each_message_once(store, tmp_path):
    with web_push_peer() as peer:
        subscriptions = [peer.subscribe(f"b{n}") for n in range(21)]
        peer.gone.add("/wp/b20")
        messages = [push(n, s.as_json()) for n, s in enumerate(subscriptions)]
        sender = open_channel("web_push", {**web_push_options(tmp_path, peer), "timeout": 0.5, "concurrency": 4}, tmp_path, kind="web_push")
        report, rerun, settled, never_arrived, sleeps = run(store, sender, messages, peer)
    check(report, rerun, settled, never_arrived, sleeps, peer, store, messages, messages[-1].key)
