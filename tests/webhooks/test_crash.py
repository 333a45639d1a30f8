"""Crash test: a process writing and delivering 2,000 events is killed with SIGKILL in the
middle of its deliveries; a new process on the same outbox finishes the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from taskevents.webhooks import generate_secret
from tests.support.http import Receiver
from tests.support.socketio import wait_until

ROOT = Path(__file__).resolve().parents[2]
COUNT = 2000
SUBJECTS = 20


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.webhooks.outbox_process", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def test_a_killed_process_s_rows_are_delivered_by_the_next_one(tmp_path: Path) -> None:
    secret = generate_secret()
    outbox = str(tmp_path / "outbox.sqlite3")
    ids_file = str(tmp_path / "ids.json")
    with Receiver() as receiver:
        receiver.delay = 0.002  # a slow receiver: the kill lands mid-delivery
        url = receiver.url + "/hook"
        first = start("emit", url, outbox, secret, ids_file, str(COUNT), str(SUBJECTS))
        try:
            wait_until(lambda: os.path.exists(ids_file) or first.poll() is not None, timeout=60)
            assert first.poll() is None, first.communicate()
            wait_until(lambda: len(receiver.requests) >= 300, timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
            first.communicate()
        before = len(receiver.requests)
        assert before < COUNT  # killed mid-delivery
        emitted = json.loads(Path(ids_file).read_text())
        assert len(emitted) == len(set(emitted)) == COUNT

        second = start("deliver", url, outbox, secret)
        out, err = second.communicate(timeout=180)
        assert second.returncode == 0, err
        report = json.loads(out.splitlines()[-1])
        assert report["flushed"], report
        assert report["stats"]["pending"] == 0
        assert report["stats"]["dead"] == 0
        time.sleep(0.2)

        got = receiver.received()
        ids = [r.id for r in got]
        assert set(ids) == set(emitted)  # every event, none unknown
        # duplicates share their id and are the same request body
        bodies: dict[str | None, bytes] = {}
        for request in got:
            assert bodies.setdefault(request.id, request.body) == request.body
        duplicates = len(ids) - len(set(ids))
        # at most what was on its way when killed: 4 workers, each with up to 32 rows sent
        # but not yet marked delivered (marks are batched)
        assert duplicates <= 4 * 33
        # per subject, first arrivals in emit order
        order = {event_id: n for n, event_id in enumerate(emitted)}
        for subject, arrivals in receiver.by_subject().items():
            seen: set[str] = set()
            firsts = []
            for event_id, _seq in arrivals:
                assert event_id is not None
                if event_id not in seen:
                    seen.add(event_id)
                    firsts.append(order[event_id])
            assert firsts == sorted(firsts), subject
            assert len(firsts) == COUNT // SUBJECTS
