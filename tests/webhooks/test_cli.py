"""``taskevents webhooks status|dead|retry|purge|enable`` on a real outbox file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from taskevents import Emitter
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter
from taskevents.webhooks import generate_secret
from tests.support.http import Receiver, Reply


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskevents", "webhooks", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dead_letters_are_listed_retried_and_purged(tmp_path: Path) -> None:
    outbox = str(tmp_path / "outbox.sqlite3")
    with Receiver() as receiver:
        receiver.respond("/hook", Reply(400, b"no such config"), Reply(422))
        emitter = Emitter()
        adapter = WebhookAdapter(
            Endpoint(receiver.url + "/hook", generate_secret()),
            outbox=outbox,
            allow_hosts=["127.0.0.1"],
            poll_interval=0.1,
        ).connect(emitter)
        # a second adapter on the same outbox, with the default guard: localhost resolves
        # to 127.0.0.1, which it refuses
        guarded = WebhookAdapter(
            Endpoint(f"http://localhost:{receiver.port}/other", generate_secret()),
            outbox=outbox,
            poll_interval=0.1,
        ).connect(emitter)
        try:
            started = emitter.started("aws01", "change_ip")
            completed = emitter.completed("aws01")
            assert adapter.flush(10)
            assert guarded.flush(10)
            guarded.close()

            status = cli("status", "--outbox", outbox)
            assert status.returncode == 0, status.stderr
            lines = status.stdout.splitlines()
            assert lines[0].split() == [
                "endpoint", "pending", "retrying", "dead", "delivered", "state"
            ]  # fmt: skip
            hook = next(line for line in lines if f"127.0.0.1:{receiver.port}" in line)
            assert hook.split()[1:6] == ["0", "0", "2", "0", "enabled"]
            assert "/hook" not in status.stdout  # paths hidden unless --full-urls
            assert "/hook" in cli("status", "--outbox", outbox, "--full-urls").stdout

            dead = cli("dead", "--outbox", outbox, "--json")
            assert dead.returncode == 0, dead.stderr
            letters = json.loads(dead.stdout)
            assert len(letters) == 4
            refused = [d for d in letters if "address refused" in d["reason"]]
            assert len(refused) == 2
            assert "localhost resolves to 127.0.0.1 (loopback)" in refused[0]["reason"]
            by_status = {d["attempts"][0]["status"]: d for d in letters if d not in refused}
            assert by_status[400]["event_id"] == started.id
            assert by_status[400]["attempts"][0]["response"] == "no such config"
            assert by_status[422]["event_id"] == completed.id

            text = cli("dead", "--outbox", outbox).stdout
            assert f"task_started 'aws01' (event {started.id})" in text
            assert "HTTP 400" in text

            # retry one: it goes again with the same id, and is delivered this time
            retried = cli("retry", str(by_status[400]["id"]), "--outbox", outbox)
            assert retried.returncode == 0, retried.stderr
            assert "1 dead letter queued again" in retried.stdout
            assert adapter.flush(10)
            assert receiver.ids() == [started.id, completed.id, started.id]
            assert receiver.requests[-1].answered_status == 204

            purged = cli("purge", "--all", "--outbox", outbox)
            assert "3 dead letters deleted" in purged.stdout
            assert cli("dead", "--outbox", outbox).stdout.strip() == "no dead letters"
            final = cli("status", "--outbox", outbox, "--json", "--full-urls")
            stats = json.loads(final.stdout)
            assert stats[receiver.url + "/hook"]["delivered"] == 1
            assert stats[receiver.url + "/hook"]["dead"] == 0
        finally:
            guarded.close()
            adapter.close()


def test_disabled_endpoint_is_shown_and_enabled(tmp_path: Path) -> None:
    outbox = str(tmp_path / "outbox.sqlite3")
    with Receiver() as receiver:
        receiver.respond("/hook", Reply(410))
        url = receiver.url + "/hook"
        adapter = WebhookAdapter(
            Endpoint(url, generate_secret()),
            outbox=outbox,
            allow_hosts=["127.0.0.1"],
            poll_interval=0.1,
            workers=1,
        )
        emitter = Emitter()
        adapter.connect(emitter)
        try:
            emitter.started("aws01", "change_ip")
            emitter.completed("aws01")
            assert adapter.flush(5)  # the disabled endpoint's row waits
            status = cli("status", "--outbox", outbox).stdout
            assert "disabled: 410 Gone" in status
            enabled = cli("enable", "--url", url, "--outbox", outbox)
            assert enabled.returncode == 0, enabled.stderr
            assert adapter.flush(10)
            assert len(receiver.requests) == 2
            again = cli("enable", "--url", url, "--outbox", outbox)  # enabled already
            assert again.returncode == 0, again.stderr
            assert "was not disabled: nothing to do" in again.stdout
        finally:
            adapter.close()


def test_usage_errors(tmp_path: Path) -> None:
    missing = cli("status", "--outbox", str(tmp_path / "nope.sqlite3"))
    assert missing.returncode == 1
    assert "no outbox file at" in missing.stderr
    assert not (tmp_path / "nope.sqlite3").exists()  # never created by looking
    junk = tmp_path / "junk"
    junk.write_text("not a database" * 100)
    bad = cli("status", "--outbox", str(junk))
    assert bad.returncode == 1
    assert "not a taskevents outbox" in bad.stderr
    assert "Traceback" not in bad.stderr
    outbox = tmp_path / "o.sqlite3"
    WebhookAdapter(
        Endpoint("https://hooks.example.com/x", generate_secret()), outbox=outbox
    ).close()
    for action in ("retry", "purge"):
        result = cli(action, "--outbox", str(outbox))
        assert result.returncode == 2
        assert "IDs, or --all" in result.stderr or "--all" in result.stderr
    assert cli("retry", "99", "--outbox", str(outbox)).returncode == 1


def test_unknown_ids_and_endpoints_are_said_plainly(tmp_path: Path) -> None:
    outbox = tmp_path / "o.sqlite3"
    WebhookAdapter(
        Endpoint("https://hooks.example.com/x", generate_secret()), outbox=outbox
    ).close()
    purge = cli("purge", "99", "--outbox", str(outbox))
    assert purge.returncode == 1
    assert "no dead letter of this outbox" in purge.stderr
    assert "first column" in purge.stderr
    enable = cli("enable", "--url", "https://elsewhere.example.com/y", "--outbox", str(outbox))
    assert enable.returncode == 1
    assert "no endpoint or target https://elsewhere.example.com/... in this outbox" in enable.stderr
    word = cli("retry", "62b92def9c5a4279-1", "--outbox", str(outbox))
    assert word.returncode == 2
    assert "first column" in word.stderr


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    outbox = tmp_path / "o.sqlite3"
    WebhookAdapter(
        Endpoint("https://hooks.example.com/x", generate_secret()), outbox=outbox
    ).close()
    reader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskevents",
            "webhooks",
            "status",
            "--json",
            "--outbox",
            str(outbox),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None
    reader.stdout.close()  # as `| head -0` does
    _, err = reader.communicate(timeout=60)
    assert err == b""
    assert reader.returncode == 0
