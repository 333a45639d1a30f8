"""What the outbox gives the AWS adapters: events outlive a crash while AWS is out of
reach; the Flask config and the outbox command know them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import flask
import pytest
from flask_socketio import SocketIO

from taskevents.adapters.aws import SQSAdapter
from taskevents.adapters.outbox import SQLiteOutbox
from taskevents.cli import main as cli
from taskevents.exceptions import ValidationError
from taskevents.flask import TaskEvents
from tests.support.socketio import wait_until

from .conftest import AWS, REGION

ROOT = Path(__file__).resolve().parents[2]


def written(path: str) -> bool:
    """Whether a delivery was tried from the outbox (the child is past its start)."""
    outbox = SQLiteOutbox(path)
    try:
        return outbox.stats() != {}
    finally:
        outbox.close()


def test_events_written_while_aws_is_unreachable_survive_a_kill(aws: AWS, tmp_path: Path) -> None:
    queue_url, _ = aws.queue(fifo=True)
    outbox = str(tmp_path / "aws.sqlite3")
    ids_file = str(tmp_path / "ids.json")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.aws.aws_process", queue_url, outbox, ids_file, "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        wait_until(lambda: os.path.exists(ids_file) or child.poll() is not None, timeout=60)
        assert child.poll() is None, child.communicate()
        wait_until(lambda: written(outbox), timeout=30)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    with open(ids_file) as f:
        ids = json.load(f)
    left = SQLiteOutbox(outbox)
    assert left.pending([f"sqs:{queue_url}"]) == 60
    left.close()
    # The next process, with AWS back, sends every event once, each subject in order.
    with SQSAdapter(
        queue_url, region_name=REGION, endpoint_url=aws.url, outbox=outbox, lease=1.0
    ) as sqs:
        sqs.connect()
        assert sqs.flush(30)
    got = aws.receive(queue_url, 60, timeout=30)
    bodies = [json.loads(m["Body"]) for m in got]
    assert sorted(b["id"] for b in bodies) == sorted(ids)
    for subject in {b["subject"] for b in bodies}:
        seqs = [int(b["sequence"]) for b in bodies if b["subject"] == subject]
        assert seqs == sorted(seqs)


def test_configured_in_flask_it_delivers_the_apps_events(aws: AWS, tmp_path: Path) -> None:
    queue_url, _ = aws.queue()
    app = flask.Flask("aws-config-test")
    app.config.update(
        TASKEVENTS_SUBJECTS=["aws01"],
        TASKEVENTS_ADAPTERS={
            "sqs": {
                "queue_url": queue_url,
                "region_name": REGION,
                "endpoint_url": aws.url,
                "outbox": str(tmp_path / "aws.sqlite3"),
            }
        },
    )
    extension = TaskEvents(app, SocketIO(app, async_mode="threading"))
    state = TaskEvents.state(app)
    try:
        (adapter,) = [a for a in state.adapters if isinstance(a, SQSAdapter)]
        with app.app_context():
            started = extension.emitter.started("aws01", "change_ip")
            extension.emitter.completed("aws01")
        assert adapter.flush(15)
    finally:
        state.close()
    got = [json.loads(m["Body"]) for m in aws.receive(queue_url, 2)]
    assert started.id in {b["id"] for b in got}


def test_a_bad_option_in_the_flask_config_is_named(tmp_path: Path) -> None:
    app = flask.Flask("aws-config-test")
    app.config["TASKEVENTS_ADAPTERS"] = {
        "sqs": {"queue_url": "nope", "region_name": REGION, "outbox": str(tmp_path / "o")}
    }
    with pytest.raises(ValidationError, match=r"TASKEVENTS_ADAPTERS\['sqs'\]\.queue_url"):
        TaskEvents(app, SocketIO(app, async_mode="threading"))


def test_the_outbox_command_shows_and_enables_aws_targets(
    aws: AWS, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskevents import Emitter

    queue_url, _ = aws.queue()
    gone = queue_url + "-gone"
    path = str(tmp_path / "aws.sqlite3")
    emitter = Emitter()
    with SQSAdapter(gone, region_name=REGION, endpoint_url=aws.url, outbox=path) as sqs:
        sqs.connect(emitter)
        emitter.started("aws01", "change_ip")
        assert sqs.flush(10)
    assert cli(["outbox", "status", "--outbox", path]) == 0
    out = capsys.readouterr().out
    assert f"sqs:{gone}" in out  # shown whole: it holds no secret
    assert "disabled: the queue" in out
    assert cli(["outbox", "dead", "--outbox", path]) == 0
    assert "does not exist" in capsys.readouterr().out
    assert cli(["outbox", "enable", "--target", f"sqs:{gone}", "--outbox", path]) == 0
    assert f"sqs:{gone} enabled" in capsys.readouterr().out
