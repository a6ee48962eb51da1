"""`campaignctl settle`: a person settles messages left in doubt, after
checking the provider; settled rows are sent once by the next run or never
again, and rows not in doubt are never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from campaignctl import plugins
from campaignctl.contracts import OutgoingMessage
from campaignctl.delivery import SENT, DueMessage, deliver
from campaignctl.model import Channel
from campaignctl.state import MessageStatus, NewMessage


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "campaignctl", *args], capture_output=True, text=True, cwd=cwd, env=env)


def project_with_doubts(tmp_path: Path) -> tuple[Path, list[DueMessage]]:
    """A scaffolded project whose state has three messages in doubt (a run
    killed during the provider call) and one already sent."""
    root = tmp_path / "p"
    assert run("init", str(root), cwd=tmp_path).returncode == 0
    messages = [DueMessage(OutgoingMessage(f"spring/v1/{n}/0/w1", "spring", str(n), "email", f"{n}@example.com", {"subject": "Hi"}), 0, 0.5)
                for n in range(4)]
    store = state(root)
    store.reserve_messages([NewMessage(m.key, "spring", m.message.customer_id, "email", 0, m.cost) for m in messages])
    store.mark_sending([m.key for m in messages])
    store.finish_messages([])  # nothing answered
    store.mark_interrupted()
    store.resolve_in_doubt({messages[3].key: "provider-3"})  # settled earlier: sent
    store.close()
    return root, messages


class CannotLookUp:
    """A channel that cannot tell whether the provider has a message (most
    real providers): what is in doubt stays so until a person settles it."""

    def __init__(self, sender):
        self.send, self.close = sender.send, sender.close


def state(root: Path):
    from campaignctl.connect import open_state_store
    from campaignctl.project import load_project

    return open_state_store(load_project(root))


def test_settle_lists_then_settles_each_way_and_the_next_delivery_sends_only_the_released(tmp_path):
    root, messages = project_with_doubts(tmp_path)
    keys = [m.key for m in messages]

    listed = run("-C", str(root), "settle", "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["key"] for row in json.loads(listed.stdout)["in_doubt"]) == sorted(keys[:3])

    assert run("-C", str(root), "settle", keys[0], cwd=tmp_path).returncode == 1  # no answer given: refused
    sent = run("-C", str(root), "settle", keys[0], "--sent", "--provider-id", "prov-0", "--format", "json", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["sent"] == [keys[0]]
    released = run("-C", str(root), "settle", keys[1], keys[3], "--not-sent", "--format", "json", cwd=tmp_path)
    assert released.returncode == 1  # keys[3] was not in doubt: said, and left alone
    answer = json.loads(released.stdout)
    assert {k: answer[k] for k in ("sent", "released", "not_in_doubt")} == {"sent": [], "released": [keys[1]], "not_in_doubt": [keys[3]]}

    store = state(root)
    try:
        rows = {m.key: m for m in store.messages(keys)}
        assert rows[keys[0]].status == MessageStatus.SENT and rows[keys[0]].provider_id == "prov-0"
        assert rows[keys[1]].status == MessageStatus.PLANNED
        assert rows[keys[2]].status == MessageStatus.IN_DOUBT
        assert rows[keys[3]].status == MessageStatus.SENT and rows[keys[3]].provider_id == "provider-3"
        outbox = plugins.registry().channels["outbox"](Channel("email", "outbox", "email", 0.5, {}), tmp_path)
        report = deliver(store, {"email": CannotLookUp(outbox)}, messages)
    finally:
        store.close()
    written = [json.loads(line)["key"] for line in (tmp_path / "out" / "email.jsonl").read_text().splitlines()]
    assert written == [keys[1]]  # only the released one; the one still in doubt is not re-sent blindly
    assert report.counts["email"][SENT] == 1 and report.in_doubt == (keys[2],)


def test_settle_waits_for_the_apply_lock(tmp_path):
    root, messages = project_with_doubts(tmp_path)
    holder = state(root)
    holder.acquire_lock("an apply", 0)
    try:
        done = run("-C", str(root), "settle", messages[0].key, "--sent", cwd=tmp_path)
        assert done.returncode == 1 and "an apply" in (done.stdout + done.stderr)
    finally:
        holder.release_lock()
        holder.close()
