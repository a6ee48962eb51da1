"""Exactly-once across real processes: deliveries SIGKILLed at random moments,
two applies at once, the lock between processes. Real SQLite state files, the
real outbox channel from the plugin registry, real child processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from campaignctl import plugins
from campaignctl.model import PluginConfig
from campaignctl.state import LockTimeout

# A child apply: takes the lock, delivers N messages into the outbox and prints
# its report as JSON. It prints "batch" after each batch, so that a kill lands
# mid-delivery rather than during interpreter start-up. Modes:
#   lookup        the real outbox channel, which can look messages up
#   blind         the same file, but no lookup, as most real providers
#   crash-before  SIGKILLs itself in its third provider call, before writing
#   crash-torn    ... after writing half of that batch's bytes
#   crash-after   ... after the whole batch is written and fsynced
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from campaignctl import plugins
    from campaignctl.contracts import OutgoingMessage
    from campaignctl.delivery import DueMessage, deliver
    from campaignctl.model import Channel, PluginConfig
    from campaignctl.state import locked

    root, count, batch_size, mode = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), root)
    outbox = plugins.registry().channels["outbox"](Channel("email", "outbox", "email", 0.1, {}), root)

    class Blind:
        close = outbox.close

        def send(self, messages):
            return outbox.send(messages)

    class CrashingOnThirdCall(Blind):
        calls = 0

        def send(self, messages):
            self.calls += 1
            if self.calls == 3:
                if mode == "crash-torn":
                    data = "".join(outbox._line(m) for m in messages).encode()
                    with outbox.path.open("ab") as sink:
                        sink.write(data[: len(data) // 2])
                elif mode == "crash-after":
                    outbox.send(messages)
                os.kill(os.getpid(), signal.SIGKILL)
            return outbox.send(messages)

    sender = {"lookup": outbox, "blind": Blind()}.get(mode) or CrashingOnThirdCall()
    messages = [
        DueMessage(OutgoingMessage(f"bf/v1/{n}/0/w1", "bf", str(n), "email", f"{n}@example.com", {"subject": "Sale"}), 0, 0.1)
        for n in range(count)
    ]
    def on_progress(done, total):
        print("batch", flush=True)  # the parent kills after a random number of these

    with locked(store, "apply", timeout=60):
        report = deliver(store, {"email": sender}, messages, batch_size=batch_size, on_progress=on_progress)
    print(json.dumps(report.as_dict()), flush=True)
""")

# Only the plugins the child needs: interpreter start-up is most of a kill's cost.
CHILD_ENV = {**os.environ, "CAMPAIGNCTL_LOAD_PLUGINS": "sqlite,outbox"}


def start_child(root: Path, count: int, mode: str = "lookup", batch_size: int = 100) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(count), str(batch_size), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
    )


def finish(child: subprocess.Popen) -> dict:
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def crashed(child: subprocess.Popen) -> None:
    child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL


def kill_while_sending(root: Path, count: int, rng: random.Random) -> None:
    """Start a delivery and SIGKILL it after a random number of batches (1-30),
    a random 0-3 ms into the next one. Counting batches, not milliseconds, keeps
    the number of messages each kill lets through independent of the machine's
    speed; small batches mean more kills land inside one."""
    child = start_child(root, count, batch_size=20)
    for _ in range(rng.randint(1, 30)):
        line = child.stdout.readline()
        if line != "batch\n":
            out, err = child.communicate(timeout=300)
            pytest.fail(f"the delivery ended before the kill (exit {child.returncode}): {line}{out}\n{err}")
    time.sleep(rng.uniform(0, 0.003))
    child.send_signal(signal.SIGKILL)
    child.wait()


def outbox_keys(root: Path) -> list[str]:
    path = root / "out" / "email.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a torn line was left in the outbox"
    return [json.loads(line)["key"] for line in text.splitlines()]


def ledger(root: Path):
    return plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), root)


def assert_sent_exactly_once(root: Path, count: int) -> None:
    """Outbox and ledger agree, key for key: none twice, none missing, none in doubt."""
    sent = outbox_keys(root)
    assert len(sent) == len(set(sent)), "a message was sent twice"
    store = ledger(root)
    try:
        assert sorted(sent) == store.message_keys(status="sent") == store.message_keys()
        assert len(sent) == count
    finally:
        store.close()


@pytest.mark.parametrize("kills, count", [(10, 20_000), pytest.param(50, 50_000, marks=pytest.mark.slow)])
def test_deliveries_killed_at_random_send_every_message_exactly_once(tmp_path, kills, count):
    """The issue's bar (the slow case): SIGKILLed 50 times at random during a
    large send, then rerun to completion: outbox == ledger, no duplicates, none missing."""
    rng = random.Random(20250301 + kills)
    for _ in range(kills):
        kill_while_sending(tmp_path, count, rng)
    assert 0 < len(outbox_keys(tmp_path)) < count  # the kills did interrupt the delivery
    report = finish(start_child(tmp_path, count))
    assert_sent_exactly_once(tmp_path, count)
    assert report["in_doubt"] == []
    assert report["counts"]["email"]["already_sent"] > 0


@pytest.mark.parametrize("mode, fewest, most", [("crash-before", 0, 0), ("crash-torn", 1, 99), ("crash-after", 100, 100)])
def test_a_crash_inside_the_provider_call_is_settled_by_lookup(tmp_path, mode, fewest, most):
    """The three moments a provider call can die, each made to happen: the next
    run finds what the provider has (with a torn write: the lines completed
    before the kill) and sends only the rest."""
    crashed(start_child(tmp_path, 1000, mode))
    with closing(ledger(tmp_path)) as store:
        assert len(store.message_keys(status="sending")) == 100  # the third batch, caught mid-call
    report = finish(start_child(tmp_path, 1000))
    assert_sent_exactly_once(tmp_path, 1000)
    counts = report["counts"]["email"]
    recovered = counts.get("recovered", 0)
    assert fewest <= recovered <= most
    assert (counts["already_sent"], counts["sent"]) == (200, 800 - recovered)


def test_without_lookup_a_crash_leaves_messages_in_doubt_never_resent(tmp_path):
    crashed(start_child(tmp_path, 1000, "crash-after"))
    report = finish(start_child(tmp_path, 1000, "blind"))

    sent = outbox_keys(tmp_path)
    assert len(sent) == len(set(sent)) == 1000, "an in-doubt message was re-sent"
    with closing(ledger(tmp_path)) as store:
        in_doubt = store.message_keys(status="in_doubt")
        assert len(in_doubt) == 100 and report["in_doubt"] == in_doubt
        assert len(store.message_keys(status="sent")) == 900
    assert report["counts"]["email"] == {"already_sent": 200, "in_doubt": 100, "sent": 700}


def test_two_applies_started_together_send_nothing_twice(tmp_path):
    first, second = start_child(tmp_path, 3000), start_child(tmp_path, 3000)
    reports = [finish(first), finish(second)]
    assert_sent_exactly_once(tmp_path, 3000)
    totals = sorted(r["counts"]["email"].get("sent", 0) for r in reports)
    assert totals == [0, 3000]  # one ran, the other waited for the lock and found all sent


# --------------------------------------------------------------------------- the lock between processes

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from campaignctl import plugins
    from campaignctl.model import PluginConfig

    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), Path(sys.argv[1]))
    store.acquire_lock("nightly apply", timeout=0)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    store.close()
""")


def hold_lock(root: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_process_waits_for_the_lock_then_proceeds(tmp_path):
    holder = hold_lock(tmp_path, 1.0)
    store = ledger(tmp_path)
    try:
        started = time.monotonic()
        store.acquire_lock("second apply", timeout=30)
        assert time.monotonic() - started > 0.3
        assert holder.wait(timeout=10) == 0
        assert store.lock_holder().pid == os.getpid()
    finally:
        store.close()


def test_a_second_process_times_out_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path, 30)
    store = ledger(tmp_path)
    try:
        with pytest.raises(LockTimeout, match=rf"held by 'nightly apply' \(pid {holder.pid} on .*waited 0.2s"):
            store.acquire_lock("second apply", timeout=0.2)
    finally:
        holder.kill()
        holder.wait()
        store.close()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = hold_lock(tmp_path, 30)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    store = ledger(tmp_path)
    try:
        assert store.lock_holder().pid == holder.pid  # its row is still there
        store.acquire_lock("after the crash", timeout=0)
        assert store.lock_holder().owner == "after the crash"
    finally:
        store.close()
