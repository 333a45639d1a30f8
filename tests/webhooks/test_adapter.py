"""The webhook adapter against real HTTP servers on 127.0.0.1: signatures, retries, dead
letters, order, progress, the SSRF guard and a full outbox."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from taskevents import Emitter
from taskevents.adapters.outbox import MemoryOutbox, SQLiteOutbox
from taskevents.adapters.webhooks import Endpoint, WebhookAdapter
from taskevents.exceptions import ValidationError
from taskevents.webhooks import generate_secret, verify
from tests.support.http import Receiver, Reply
from tests.support.socketio import wait_until
from tests.webhooks.conftest import Make

SECRET = generate_secret()


def run_task(emitter: Emitter, subject: str = "aws01", *, fail: bool = False) -> list[str]:
    ids = [emitter.started(subject, "change_ip").id]
    if fail:
        ids.append(emitter.failed(subject, "boom").id)
    else:
        ids.append(emitter.completed(subject, {"ip": "203.0.113.9"}).id)
    return ids


# -- signatures -------------------------------------------------------------------------


def test_the_standardwebhooks_package_verifies_what_is_sent(receiver: Receiver, make: Make) -> None:
    secret = generate_secret()
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", secret)).connect(emitter)
    ids = run_task(emitter)
    assert adapter.flush(10)
    got = receiver.wait_for(2)
    assert [r.id for r in got] == ids
    for request in got:
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload == verify(request.body, request.headers, secret)
        assert payload["type"] in ("task_started", "task_completed")
        assert payload["data"]["id"] == request.id
        assert payload["data"]["subject"] == "aws01"
        assert request.headers["content-type"] == "application/json"
    assert got[1].json["data"]["data"] == {"result": {"ip": "203.0.113.9"}}


def test_two_secrets_while_rotating_each_verifies(receiver: Receiver, make: Make) -> None:
    old, new = generate_secret(), generate_secret()
    emitter = Emitter()
    make(Endpoint(receiver.url + "/hook", [old, new])).connect(emitter)
    run_task(emitter)
    request = receiver.wait_for(1)[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(generate_secret()).verify(request.body, request.headers)


def test_cloudevents_format(receiver: Receiver, make: Make) -> None:
    from cloudevents.core.formats.json import JSONFormat

    emitter = Emitter()
    make(Endpoint(receiver.url + "/ce", generate_secret(), format="cloudevents")).connect(emitter)
    started = emitter.started("aws01", "change_ip")
    request = receiver.wait_for(1)[0]
    assert request.headers["content-type"].startswith("application/cloudevents+json")
    event = JSONFormat().read(None, request.body)
    assert event.get_id() == started.id == request.id
    assert event.get_type() == "io.taskevents.task_started"
    assert event.get_subject() == "aws01"


# -- what becomes of each answer ---------------------------------------------------------


def test_a_500_then_200_is_sent_again_with_the_same_id(receiver: Receiver, make: Make) -> None:
    receiver.respond("/hook", Reply(500, b"busy"), Reply(200))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    started = emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert receiver.ids() == [started.id, started.id]
    stats = adapter.stats
    assert stats["delivered"] == 1
    assert stats["retries"] == 1
    assert stats["pending"] == stats["dead"] == 0
    # each attempt is signed afresh, but both verify
    for request in receiver.requests:
        Webhook(adapter.endpoints[0].secrets[0]).verify(request.body, request.headers)


def test_retry_after_is_honoured(receiver: Receiver, make: Make) -> None:
    receiver.respond("/hook", Reply(429, headers={"Retry-After": "1"}), Reply(503), Reply(204))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    first, second, third = receiver.requests
    assert second.time - first.time >= 0.95  # asked for 1 s; the schedule says 50 ms
    assert third.time - second.time < 0.9  # a 503 without Retry-After: the schedule


def test_a_400_is_a_dead_letter_at_once(receiver: Receiver, make: Make, tmp_path: Path) -> None:
    receiver.respond("/hook", Reply(400, b'{"error": "unknown subject"}'))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    started, completed = run_task(emitter)
    assert adapter.flush(10)
    # the dead letter does not hold up the subject's next event
    assert receiver.ids() == [started, completed]
    assert adapter.stats["dead"] == 1
    assert adapter.stats["delivered"] == 1
    (letter,) = adapter.outbox.dead_letters()
    assert letter.event_id == started
    assert "400" in letter.reason
    (attempt,) = letter.attempts
    assert attempt.status == 400
    assert attempt.response == '{"error": "unknown subject"}'


def test_a_410_disables_the_endpoint(receiver: Receiver, make: Make) -> None:
    receiver.respond("/gone", Reply(410))
    emitter = Emitter()
    adapter = make(
        [
            Endpoint(receiver.url + "/gone", generate_secret()),
            Endpoint(receiver.url + "/ok", generate_secret()),
        ],
        workers=1,  # one lane at a time: no other lane is on its way when the 410 comes
    ).connect(emitter)
    run_task(emitter)
    run_task(emitter, "aws02")
    assert adapter.flush(5)  # a disabled endpoint's rows wait; flush does not wait for them
    gone = adapter.stats["endpoints"][receiver.url + "/gone"]
    assert gone["disabled"]
    assert "410" in gone["disabled"]
    assert gone["dead"] == 1
    assert gone["pending"] == 3
    assert [r.path for r in receiver.requests].count("/gone") == 1
    assert [r.path for r in receiver.requests].count("/ok") == 4
    # re-enabled: the rest goes
    assert adapter.outbox.enable(receiver.url + "/gone")
    assert adapter.flush(10)
    assert [r.path for r in receiver.requests].count("/gone") == 4


def test_a_redirect_is_not_followed(receiver: Receiver, make: Make) -> None:
    receiver.respond("/hook", *[Reply(302, headers={"Location": "/elsewhere"})] * 4)
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert [r.path for r in receiver.requests] == ["/hook"] * 4  # retried, never followed
    (letter,) = adapter.outbox.dead_letters()
    assert "redirect" in letter.reason
    assert "gave up after 4 attempts" in letter.reason


def test_a_timeout_is_retried(receiver: Receiver, make: Make) -> None:
    receiver.respond("/hook", Reply(200, delay=1.0), Reply(200))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret(), timeout=0.3)).connect(
        emitter
    )
    started = emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert receiver.ids() == [started.id, started.id]
    assert adapter.stats["delivered"] == 1
    assert adapter.stats["endpoints"][receiver.url + "/hook"]["last_attempt"]["status"] == 200


def test_a_connection_closed_without_an_answer_is_retried(receiver: Receiver, make: Make) -> None:
    receiver.respond("/hook", Reply(None))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    started = emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert receiver.ids() == [started.id, started.id]


def test_exhausted_retries_make_a_dead_letter_with_every_attempt(
    receiver: Receiver, make: Make
) -> None:
    receiver.default = Reply(503, b"down for maintenance")
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    (letter,) = adapter.outbox.dead_letters()
    assert [a.status for a in letter.attempts] == [503] * 4
    assert all(a.response == "down for maintenance" for a in letter.attempts)
    assert all(a.duration >= 0 for a in letter.attempts)


# -- order, isolation, progress --------------------------------------------------------------


def test_a_subjects_later_event_waits_while_an_earlier_one_is_retried(
    receiver: Receiver, make: Make
) -> None:
    receiver.respond("/hook", Reply(500), Reply(500))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    ids = []
    for _ in range(5):
        ids += run_task(emitter)
    assert adapter.flush(10)
    delivered = [r.id for r in receiver.requests if r.answered_status == 204]
    assert delivered == ids


def test_a_dead_endpoint_and_a_slow_one_do_not_hold_up_another(
    receiver: Receiver, make: Make
) -> None:
    receiver.respond("/slow", *[Reply(200, delay=3.0)] * 20)
    emitter = Emitter()
    adapter = make(
        [
            Endpoint("http://127.0.0.1:9/dead", generate_secret(), timeout=1),
            Endpoint(receiver.url + "/slow", generate_secret(), timeout=10),
            Endpoint(receiver.url + "/fast", generate_secret()),
        ],
        retry_schedule=(0, 5, 5),
    ).connect(emitter)
    start = time.monotonic()
    for n in range(10):
        run_task(emitter, f"s{n}")
    wait_until(lambda: [r.path for r in receiver.requests].count("/fast") == 20, timeout=10)
    assert time.monotonic() - start < 2.5  # not behind a 3 s answer
    stats = adapter.stats["endpoints"]
    assert stats["http://127.0.0.1:9/dead"]["retrying"] >= 1


def test_progress_is_off_by_default(receiver: Receiver, make: Make) -> None:
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    emitter.started("aws01", "change_ip")
    for p in range(10):
        emitter.progress("aws01", p * 10)
    emitter.completed("aws01")
    assert adapter.flush(10)
    assert [r.json["type"] for r in receiver.requests] == ["task_started", "task_completed"]


def test_progress_when_on_is_coalesced_and_rate_limited(receiver: Receiver, make: Make) -> None:
    emitter = Emitter()
    adapter = make(
        Endpoint(receiver.url + "/hook", generate_secret(), progress=True),
        progress_interval=0.5,
    ).connect(emitter)
    emitter.started("aws01", "change_ip")
    receiver.wait_for(1)
    start = time.monotonic()
    for p in range(100):  # over about 1.5 s
        emitter.progress("aws01", p)
        time.sleep(0.015)
    emitter.completed("aws01")
    assert adapter.flush(10)
    types = [r.json["type"] for r in receiver.requests]
    assert types[0] == "task_started"
    assert types[-1] == "task_completed"
    progress = [r for r in receiver.requests if r.json["type"] == "task_progress"]
    elapsed = time.monotonic() - start
    assert 2 <= len(progress) <= elapsed / 0.5 + 2
    # the last one goes at once, ahead of the completion that followed it
    # (slots are 0.5 s apart; an earlier one may be sent a little late on a busy machine)
    for earlier, later in itertools.pairwise(progress[:-1]):
        assert later.time - earlier.time >= 0.3
    # latest wins: the last progress before completion is the last one emitted
    assert progress[-1].json["data"]["data"]["percent"] == 99


# -- the SSRF guard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/hook",
    ],
)
def test_a_private_or_loopback_address_is_refused_at_construction(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"endpoints\[0\]\.url"):
        WebhookAdapter(Endpoint(url, generate_secret()), outbox=tmp_path / "o.sqlite3")


def test_a_host_name_resolving_to_loopback_is_refused_at_delivery(
    receiver: Receiver, make: Make
) -> None:
    emitter = Emitter()
    adapter = make(
        Endpoint(f"http://localhost:{receiver.port}/hook", generate_secret()), allow_hosts=()
    ).connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert receiver.requests == []
    (letter,) = adapter.outbox.dead_letters()
    assert "localhost" in letter.reason
    assert "127.0.0.1" in letter.reason
    assert len(letter.attempts) == 1  # refused once, not retried


# -- never in the task's way ----------------------------------------------------------------


def test_a_full_outbox_never_raises_into_the_task_and_loses_nothing(
    receiver: Receiver, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret()))
    outbox = adapter.outbox
    assert isinstance(outbox, SQLiteOutbox)
    adapter.connect(emitter)
    run_task(emitter)
    assert adapter.flush(10)
    # SQLite's own "database or disk is full", by capping the file at its size now
    with outbox._lock:  # the workers share the connection
        outbox._db.execute("VACUUM")  # no free pages left to write into
        pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
        outbox._db.execute(f"PRAGMA max_page_count = {pages}")
    ids = []
    for n in range(300):
        ids += run_task(emitter, f"s{n % 7}")  # never raises
    assert adapter.stats["unwritten"] > 0
    full = [r for r in caplog.records if "outbox" in r.getMessage()]
    assert 1 <= len(full) <= 2, [r.getMessage() for r in full]  # once per cause
    assert "full" in full[0].getMessage()
    with outbox._lock:
        outbox._db.execute("PRAGMA max_page_count = 1073741823")
    assert adapter.flush(20)
    assert adapter.stats["unwritten"] == 0
    assert sorted(str(i) for i in receiver.ids()[2:]) == sorted(ids)
    for subject, got in receiver.by_subject().items():
        seqs = [seq for _, seq in got]
        assert seqs == sorted(seqs), subject


# -- durability within one machine ----------------------------------------------------------


def test_the_receiver_down_then_up_gets_everything(make: Make) -> None:
    with Receiver() as receiver:
        port = receiver.port
        receiver.stop()
        emitter = Emitter()
        adapter = make(
            Endpoint(receiver.url + "/hook", generate_secret()),
            retry_schedule=(0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2),
        ).connect(emitter)
        ids = []
        for n in range(20):
            ids += run_task(emitter, f"s{n % 4}")
        time.sleep(0.5)
        assert adapter.stats["retrying"] >= 1
        receiver.start()
        assert receiver.port == port
        assert adapter.flush(20)
        assert sorted({str(i) for i in receiver.ids()}) == sorted(ids)
        assert adapter.stats["dead"] == 0


def test_a_new_adapter_on_the_same_outbox_resumes(
    receiver: Receiver, make: Make, tmp_path: Path
) -> None:
    receiver.stop()
    emitter = Emitter()
    first = make(Endpoint(receiver.url + "/hook", generate_secret()), retry_schedule=(0, 0.2) * 9)
    first.connect(emitter)
    ids = run_task(emitter) + run_task(emitter, "aws02")
    first.close(timeout=0.2)
    left = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    assert left.pending([receiver.url + "/hook"]) == 4
    left.close()
    receiver.start()
    second = make(Endpoint(receiver.url + "/hook", generate_secret())).connect()
    assert second.flush(10)
    assert set(receiver.ids()) == set(ids)


def test_two_adapters_sharing_an_outbox_deliver_each_row_once(
    receiver: Receiver, make: Make
) -> None:
    endpoint = Endpoint(receiver.url + "/hook", generate_secret())
    emitter = Emitter()
    one = make(endpoint).connect(emitter)
    two = make(endpoint)  # a second process would look like this: it only delivers
    two.connect(Emitter())
    ids = []
    for n in range(200):
        ids += run_task(emitter, f"s{n % 10}")
    assert one.flush(20)
    assert two.flush(20)
    assert sorted(str(i) for i in receiver.ids()) == sorted(ids)  # every id once


def test_the_memory_outbox_keeps_the_same_rules(receiver: Receiver, make: Make) -> None:
    receiver.respond("/hook", Reply(500), Reply(400))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret()), outbox=MemoryOutbox())
    adapter.connect(emitter)
    ids = run_task(emitter) + run_task(emitter)
    assert adapter.flush(10)
    assert receiver.ids() == [ids[0], ids[0], ids[1], ids[2], ids[3]]
    assert adapter.stats["dead"] == 1
    assert adapter.stats["delivered"] == 3


# -- configuration ---------------------------------------------------------------------------


def test_load_adapter_and_mappings_build_the_same_adapter(tmp_path: Path) -> None:
    from taskevents import load_adapter

    secret = generate_secret()
    adapter = load_adapter(
        "webhooks",
        endpoints=[{"url": "https://hooks.example.com/tasks", "secret": secret}],
        outbox=str(tmp_path / "o.sqlite3"),
    )
    try:
        assert isinstance(adapter, WebhookAdapter)
        assert adapter.endpoints[0].url == "https://hooks.example.com/tasks"
        assert secret not in repr(adapter.endpoints[0])
    finally:
        adapter.close()


@pytest.mark.parametrize(
    ("endpoints", "field"),
    [
        ([], "endpoints"),
        ("https://x.example/", "endpoints"),
        ([{"url": "https://x.example/"}], "endpoints[0]"),
        ([{"url": "ftp://x.example/", "secret": "whsec_AAAA"}], "endpoints[0].url"),
        ([{"url": "https://x.example/", "secret": "plain"}], "endpoints[0].secret"),
        ([{"url": "https://x.example/", "secret": SECRET, "format": "xml"}], "format"),
        ([{"url": "https://x.example/", "secret": "whsec_AAAA"}], "endpoints[0].secret"),
    ],
)
def test_bad_configuration_names_the_field(endpoints: Any, field: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookAdapter(endpoints, outbox=tmp_path / "o.sqlite3")
    assert field in str(caught.value)
    assert "whsec_AAAA" not in str(caught.value)
    assert SECRET not in str(caught.value)


def test_an_unusable_outbox_file_is_a_clear_error(tmp_path: Path) -> None:
    from taskevents.adapters.outbox import OutboxError

    path = tmp_path / "not-an-outbox"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="not a taskevents outbox"):
        WebhookAdapter(Endpoint("https://x.example/", generate_secret()), outbox=path)
    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema', '99')")
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match="schema 99"):
        WebhookAdapter(Endpoint("https://x.example/", generate_secret()), outbox=other)


def test_bodies_are_compact_json(receiver: Receiver, make: Make) -> None:
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    emitter.started("aws01", "change_ip", note="héllo")
    assert adapter.flush(10)
    body = receiver.requests[0].body
    assert b", " not in body
    assert json.loads(body)["data"]["data"]["note"] == "héllo"


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 24 random bytes"):
        Endpoint("https://hooks.example.com/x", "whsec_aGVsbG8=")


def test_the_outbox_file_is_for_its_owner_only_and_a_missing_directory_is_named(
    tmp_path: Path,
) -> None:
    from taskevents.adapters.outbox import OutboxError

    path = tmp_path / "o.sqlite3"
    SQLiteOutbox(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(OutboxError, match=r"directory .*nowhere.* does not exist"):
        SQLiteOutbox(tmp_path / "nowhere" / "o.sqlite3")


def test_a_failing_endpoint_is_not_silent(
    receiver: Receiver, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.default = Reply(503, b"maintenance")
    emitter = Emitter()
    adapter = make(
        Endpoint(receiver.url + "/hook", generate_secret()), retry_schedule=(0, 30)
    ).connect(emitter)
    emitter.started("aws01", "change_ip")
    emitter.started("aws02", "change_ip")
    receiver.wait_for(2)
    wait_until(lambda: adapter.stats["retrying"] == 2)
    warnings = [r.getMessage() for r in caplog.records if "failed (attempt 1)" in r.getMessage()]
    assert len(warnings) == 1  # one per target and minute, not one per row
    assert "HTTP 503" in warnings[0]
    assert "/hook" not in warnings[0]  # the path may hold a token
    endpoint = adapter.stats["endpoints"][receiver.url + "/hook"]
    assert endpoint["last_error"] == "HTTP 503"


def test_after_close_stats_still_answer_and_an_unconnected_adapter_says_so(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = make(Endpoint("https://hooks.example.com/x", generate_secret()))
    adapter.close()
    assert adapter.stats["closed"] is True
    assert adapter.stats["delivered"] == 0
    assert any("without ever being connected" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_these_statuses_are_retried(status: int, receiver: Receiver, make: Make) -> None:
    receiver.respond("/hook", Reply(status))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    started = emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert receiver.ids() == [started.id, started.id]
    assert [r.answered_status for r in receiver.requests] == [status, 204]
    assert adapter.stats["dead"] == 0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_these_statuses_make_a_dead_letter_at_once(
    status: int, receiver: Receiver, make: Make
) -> None:
    receiver.respond("/hook", Reply(status))
    emitter = Emitter()
    adapter = make(Endpoint(receiver.url + "/hook", generate_secret())).connect(emitter)
    emitter.started("aws01", "change_ip")
    assert adapter.flush(10)
    assert len(receiver.requests) == 1
    assert adapter.stats["dead"] == 1
