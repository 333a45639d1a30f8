"""examples/taskmaster/: the original TaskMaster app rebuilt on taskevents.

moto stands in for AWS, as the example's own ``--simulate-aws`` does: the task code makes
the same boto3 calls it makes on a real account. First the TaskManager and the app in
this process, then the example as its README runs it, ``python
examples/taskmaster/app.py --simulate-aws --port PORT``, watched by a python-socketio
client and by the dashboard in Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import flask
import pytest
from botocore.exceptions import ClientError

from taskevents.flask import TaskEvents
from taskevents.testing import capture_events
from tests.support.browser import chromium, free_port, http_json
from tests.support.socketio import Client
from tests.web.test_demo import send

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "taskmaster"
sys.path.append(str(EXAMPLE.parent))  # the example imports itself as `taskmaster`

from taskmaster.app import create_app, trusted_hosts_for  # noqa: E402
from taskmaster.aws import (  # noqa: E402
    AwsConfig,
    ConfigError,
    SimulatedAws,
    aws_client,
    load_configs,
)
from taskmaster.taskmanager import TaskManager  # noqa: E402

#: Generous: a loaded CI machine may be slow, and waits end as soon as they succeed.
WAIT = 20.0
STAGES = ["lookup", "allocate", "associate", "release"]
MISSING = "i-0123456789abcdef0"  # a well-formed id that no simulated instance has


# -- simulated AWS, in this process ---------------------------------------------------------


@pytest.fixture
def aws() -> Iterator[SimulatedAws]:
    """The example's own simulation: moto's server on 127.0.0.1; emptied afterwards
    (moto keeps its accounts per process)."""
    with SimulatedAws() as simulated:
        try:
            yield simulated
        finally:
            reset = urllib.request.Request(simulated.endpoint_url + "/moto-api/reset", b"")
            with urllib.request.urlopen(reset, timeout=10):
                pass


def ec2_in(aws: SimulatedAws, region: str) -> Any:
    return aws.client(AwsConfig("any", region, "i-any"))


def instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    found: dict[str, Any] = reservations[0]["Instances"][0]
    return found


def addresses(ec2: Any) -> dict[str, dict[str, Any]]:
    """The account's Elastic IPs in the client's region, by public IP."""
    return {a["PublicIp"]: a for a in ec2.describe_addresses()["Addresses"]}


@dataclass
class App:
    """The example's app in this process, with Flask's test client."""

    app: flask.Flask
    manager: TaskManager

    @property
    def client(self) -> flask.testing.FlaskClient:
        return self.app.test_client()

    def start(self, config_name: str, body: Any = None, **options: Any) -> Any:
        return self.client.post(
            f"/api/tasks/{config_name}",
            json={"task_type": "change_ip"} if body is None else body,
            **options,
        )

    def wait_idle(self, config_name: str) -> dict[str, Any]:
        """``GET /api/tasks/<config_name>`` once the manager's tasks have ended (and
        reported: the state turns idle a moment before the event reaches adapters)."""
        assert self.manager.wait(WAIT), "the task did not end"
        status: dict[str, Any] = self.client.get(f"/api/tasks/{config_name}").get_json()
        assert status["status"]["status"] == "idle", status
        return status


@pytest.fixture
def serve() -> Iterator[Callable[..., App]]:
    """``serve(configs, client_factory)``: the example's app; closed afterwards."""
    apps: list[App] = []

    def start(configs: dict[str, AwsConfig], client_factory: Any) -> App:
        app = create_app(configs, client_factory)
        apps.append(App(app, app.extensions["taskmaster"]))
        return apps[-1]

    yield start
    for served in apps:
        assert served.manager.wait(WAIT)
        TaskEvents.state(served.app).close()


def no_aws(config: AwsConfig) -> Any:
    raise AssertionError("no task should have started")


def one_config(region: str = "eu-west-1", instance_id: str = MISSING) -> dict[str, AwsConfig]:
    return {"aws01": AwsConfig("aws01", region, instance_id)}


# -- change_ip on the simulated AWS -----------------------------------------------------------


def test_change_ip_moves_the_instance_to_a_new_elastic_ip_and_releases_the_old(
    aws: SimulatedAws, serve: Callable[..., App]
) -> None:
    configs = aws.create_instances(one_config("eu-west-1", "i-from-the-file"))
    instance_id = configs["aws01"].instance_id
    assert instance_id != "i-from-the-file"
    ec2 = ec2_in(aws, "eu-west-1")
    old_ip = instance(ec2, instance_id)["PublicIpAddress"]
    old = addresses(ec2)[old_ip]
    assert old["InstanceId"] == instance_id  # the simulation gave it an Elastic IP

    served = serve(configs, aws.client)
    with capture_events(served.manager.emitter) as events:
        response = served.start("aws01")
        assert response.status_code == 202, response.get_json()
        status = served.wait_idle("aws01")

    last = status["status"]["last"]
    assert last["outcome"] == "completed", last
    new_ip = last["result"]["data"]["ip"]
    # The original TaskMaster's result, and its summary of the last task.
    assert last["result"] == {"status": "success", "data": {"ip": new_ip, "previous_ip": old_ip}}
    assert status["status"]["last_task"]["status"] == "success"
    assert status["status"]["last_task"]["data"] == last["result"]
    # On the (simulated) account: the instance has the new address; the old one is gone.
    assert new_ip != old_ip
    assert instance(ec2, instance_id)["PublicIpAddress"] == new_ip
    now = addresses(ec2)
    assert old_ip not in now
    assert now[new_ip]["InstanceId"] == instance_id
    with pytest.raises(ClientError, match=r"InvalidAllocationID\.NotFound"):
        ec2.describe_addresses(AllocationIds=[old["AllocationId"]])

    assert [e.type for e in events] == [
        "task_started",
        *["task_progress"] * len(STAGES),
        "task_completed",
    ]
    progress = [e.data for e in events if e.type == "task_progress"]
    assert [p["stage"] for p in progress] == STAGES
    assert [p["percent"] for p in progress] == sorted(p["percent"] for p in progress)
    assert progress[0]["message"] == f"Looking up {instance_id} in eu-west-1..."
    assert progress[2]["message"] == f"Associating {new_ip} with {instance_id}..."
    assert progress[3]["message"] == f"Releasing the old Elastic IP {old_ip}..."
    assert {e.task_id for e in events} == {response.get_json()["task_id"]}


def test_an_auto_assigned_address_is_noted_not_released(
    aws: SimulatedAws, serve: Callable[..., App]
) -> None:
    ec2 = ec2_in(aws, "us-east-1")
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    instance_id = reservation["Instances"][0]["InstanceId"]
    auto_ip = instance(ec2, instance_id)["PublicIpAddress"]
    assert auto_ip not in addresses(ec2)  # AWS's, not the account's

    served = serve(one_config("us-east-1", instance_id), aws.client)
    with capture_events(served.manager.emitter, types=["task_progress"]) as progress:
        assert served.start("aws01").status_code == 202
        last = served.wait_idle("aws01")["status"]["last"]

    assert last["outcome"] == "completed", last
    new_ip = last["result"]["data"]["ip"]
    assert last["result"]["data"]["previous_ip"] == auto_ip
    assert instance(ec2, instance_id)["PublicIpAddress"] == new_ip
    assert [a for a in addresses(ec2).values() if a.get("InstanceId") == instance_id] == [
        addresses(ec2)[new_ip]
    ]
    assert progress[-1].data["stage"] == "release"
    assert progress[-1].data["message"] == (
        f"{auto_ip} was auto-assigned: AWS takes it back by itself"
    )


def test_a_missing_instance_fails_the_task_readably_and_the_config_is_idle_again(
    aws: SimulatedAws, serve: Callable[..., App]
) -> None:
    served = serve(one_config("eu-west-1", MISSING), aws.client)
    emitter = served.manager.emitter
    with capture_events(emitter, types=["task_failed"]) as failures:
        response = served.start("aws01")
        assert response.status_code == 202
        status = served.wait_idle("aws01")["status"]

    error = {"type": "InstanceNotFound", "message": f"instance {MISSING} not found in eu-west-1"}
    assert [event.data["error"] for event in failures] == [error]
    assert failures[0].task_id == response.get_json()["task_id"]
    # The REST endpoint and the emitter's state agree: idle, the last task failed.
    assert status["status"] == "idle"
    assert status["current_task"] is None
    assert status["last"]["outcome"] == "failed"
    assert status["last"]["error"] == error
    assert status["last_task"]["status"] == "failed"  # the original's summary
    snapshot = emitter.state.snapshot("aws01")
    assert snapshot is not None
    assert (snapshot.status, snapshot.current) == ("idle", None)
    assert snapshot.last is not None
    assert snapshot.last.error == error
    # Nothing was allocated, and the config takes a new task.
    assert addresses(ec2_in(aws, "eu-west-1")) == {}
    assert served.start("aws01").status_code == 202
    assert served.wait_idle("aws01")["status"]["last"]["outcome"] == "failed"


class FailingAssociation:
    """An EC2 client whose first AssociateAddress fails, as it does in a VPC without an
    internet gateway; every other call goes to the simulated AWS."""

    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def associate_address(self, **kwargs: Any) -> Any:
        if self.failed:
            return self._ec2.associate_address(**kwargs)
        self.failed = True
        error = {"Code": "Gateway.NotAttached", "Message": "Network vpc-1a2b3c4d is not attached"}
        raise ClientError({"Error": error}, "AssociateAddress")


def test_a_failed_association_puts_the_old_address_back_and_releases_the_new(
    aws: SimulatedAws, serve: Callable[..., App]
) -> None:
    configs = aws.create_instances(one_config("eu-west-1"))
    instance_id = configs["aws01"].instance_id
    ec2 = ec2_in(aws, "eu-west-1")
    before = addresses(ec2)
    (old_ip,) = before

    served = serve(configs, lambda config: FailingAssociation(aws.client(config)))
    with capture_events(served.manager.emitter, types=["task_progress"]) as progress:
        assert served.start("aws01").status_code == 202
        last = served.wait_idle("aws01")["status"]["last"]

    new_ip = progress[-1].data["message"].split()[1]  # "Associating NEW with ..."
    assert last["outcome"] == "failed"
    assert last["error"] == {
        "type": "AwsTaskError",
        "message": f"could not associate {new_ip} with {instance_id}: Gateway.NotAttached: "
        f"Network vpc-1a2b3c4d is not attached ({new_ip} was released again)",
    }
    # No Elastic IP leaked, and the old one is back on the instance.
    assert addresses(ec2).keys() == before.keys()
    assert addresses(ec2)[old_ip]["InstanceId"] == instance_id
    assert instance(ec2, instance_id)["PublicIpAddress"] == old_ip


def test_the_real_aws_factory_fails_readably_on_a_missing_profile(
    serve: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No AWS is reached: boto3 gives up on the profile before any call.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    configs = {"aws01": AwsConfig("aws01", "eu-west-1", MISSING, profile="ops")}
    served = serve(configs, aws_client)
    assert served.start("aws01").status_code == 202
    last = served.wait_idle("aws01")["status"]["last"]
    assert last["error"] == {
        "type": "AwsTaskError",
        "message": "no EC2 client for aws01: The config profile (ops) could not be found",
    }
    assert not [r for r in caplog.records if r.name == "taskmaster" and r.exc_info]


# -- the REST endpoint ------------------------------------------------------------------------


class HeldLookup:
    """An EC2 client whose DescribeInstances waits until the test lets it go: the task
    stays running for as long as the test needs."""

    def __init__(self, ec2: Any, go: threading.Event) -> None:
        self._ec2 = ec2
        self._go = go

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def describe_instances(self, **kwargs: Any) -> Any:
        assert self._go.wait(WAIT)
        return self._ec2.describe_instances(**kwargs)


def test_requests_are_answered_as_the_demo_answers_them(
    aws: SimulatedAws, serve: Callable[..., App]
) -> None:
    go = threading.Event()
    configs = aws.create_instances(one_config("eu-west-1"))
    served = serve(configs, lambda config: HeldLookup(aws.client(config), go))
    try:
        accepted = served.start("aws01")
        assert accepted.status_code == 202
        task = accepted.get_json()
        assert task == {
            "task_id": task["task_id"],
            "config_name": "aws01",
            "task_type": "change_ip",
            "status": "busy",
            "seq": 1,
        }
        busy = served.start("aws01")
        assert busy.status_code == 409
        assert busy.get_json() == {
            "error": {
                "message": "aws01 is busy with a change_ip task; try again when it has finished",
                "config_name": "aws01",
                "task_id": task["task_id"],
            }
        }
        unknown = served.start("aws09")
        assert unknown.status_code == 404
        assert unknown.get_json() == {
            "error": {"message": "unknown config_name 'aws09'", "config_name": "aws09"}
        }
        listed = served.client.get("/api/tasks").get_json()["tasks"]
        assert listed["aws01"]["status"] == "busy"
        assert listed["aws01"]["aws_current_region"] == "eu-west-1"
    finally:
        go.set()
    assert served.wait_idle("aws01")["status"]["last"]["outcome"] == "completed"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message", "field"),
    [
        ("", "application/json", 400, 'the body must be a JSON object such as {"task_type": '
         '"change_ip"}', None),
        ("{nope", "application/json", 400, 'the body must be a JSON object such as '
         '{"task_type": "change_ip"}', None),
        ('["change_ip"]', None, 400, 'the body must be a JSON object such as {"task_type": '
         '"change_ip"}', None),
        ("{}", "application/json", 400, "missing field 'task_type'; e.g. "
         '{"task_type": "change_ip"}', "task_type"),
        ('{"task_type": "reboot"}', "application/json", 400, "task_type must be one of: "
         "change_ip", "task_type"),
        ('{"task_type": ["change_ip"]}', "application/json", 400, "task_type must be one of: "
         "change_ip", "task_type"),
        ('{"task_type": "change_ip", "fail": true}', "application/json", 400,
         "unknown field 'fail'", "fail"),
        ("task_type=change_ip", "application/x-www-form-urlencoded", 415, "the body must be "
         'JSON, sent with Content-Type: application/json; e.g. {"task_type": "change_ip"}',
         None),
        ('{"task_type": "' + "x" * 20_000 + '"}', "application/json", 413,
         "the request body is too large; at most 16384 bytes", None),
    ],
)  # fmt: skip
def test_bad_bodies_are_refused_with_what_to_send(
    serve: Callable[..., App],
    body: str,
    content_type: str | None,
    status: int,
    message: str,
    field: str | None,
) -> None:
    served = serve(one_config(), no_aws)
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = served.client.post("/api/tasks/aws01", data=body, headers=headers)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["message"] == message
    assert error.get("field") == field
    assert served.client.get("/api/tasks/aws01").get_json()["status"]["status"] == "idle"


def test_other_sites_and_other_host_names_are_refused(
    aws: SimulatedAws, serve: Callable[..., App]
) -> None:
    served = serve(one_config(), aws.client)
    cross = served.start("aws01", headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    assert cross.get_json()["error"]["origin"] == "http://evil.example"
    own = served.start("aws01", headers={"Origin": "http://localhost"})
    assert own.status_code == 202
    assert served.wait_idle("aws01")["status"]["last"]["outcome"] == "failed"  # MISSING

    assert trusted_hosts_for("127.0.0.1", []) == ["127.0.0.1", "localhost"]
    assert trusted_hosts_for("0.0.0.0", ["tm.internal"]) == ["tm.internal"]
    guarded = create_app(one_config(), aws.client, trusted_hosts=["127.0.0.1", "localhost"])
    try:
        client = guarded.test_client()
        assert client.get("/api/tasks", headers={"Host": "localhost:5000"}).status_code == 200
        assert client.get("/api/tasks", headers={"Host": "rebind.example"}).status_code == 400
    finally:
        TaskEvents.state(guarded).close()


# -- the configs file -------------------------------------------------------------------------


def test_the_configs_file_names_region_instance_and_profile(tmp_path: Path) -> None:
    shipped = load_configs(EXAMPLE / "configs.json")
    assert list(shipped) == ["aws01", "aws02", "aws03"]
    assert shipped["aws03"].profile == "taskmaster"
    assert shipped["aws01"] == AwsConfig("aws01", "eu-west-1", "i-0a1b2c3d4e5f60001")

    def refused(content: Any) -> str:
        path = tmp_path / "configs.json"
        path.write_text(json.dumps(content))
        with pytest.raises(ConfigError) as caught:
            load_configs(path)
        return str(caught.value)

    entry = {"name": "aws01", "region": "eu-west-1", "instance_id": "i-1"}
    secret = {**entry, "aws_secret_access_key": "..."}
    assert "credentials do not belong in the configs file" in refused([secret])
    assert refused([{**entry, "zone": "a"}]).endswith("config #1: unknown field 'zone'")
    assert refused([entry, entry]).endswith("config #2: the name 'aws01' is used twice")
    assert refused([{**entry, "region": ""}]).endswith("'region' must be a non-empty string")
    assert refused({"aws01": entry}).endswith("expected a non-empty JSON list of configs")
    with pytest.raises(ConfigError, match="cannot read the configs file"):
        load_configs(tmp_path / "missing.json")


# -- the example as its README runs it --------------------------------------------------------


@dataclass
class Running:
    """``python examples/taskmaster/app.py --simulate-aws --port PORT``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, config_name: str, body: Any) -> tuple[int, Any]:
        return http_json(f"{self.url}/api/tasks/{config_name}", body, timeout=10)

    def get(self, path: str) -> Any:
        status, body = http_json(self.url + path, timeout=10)
        assert status == 200, body
        return body

    def watch(self, config_name: str) -> Client:
        client = Client().connect(self.url)
        assert client.next()[0] == "connection_status"
        client.emit("subscribe_task", {"config_name": config_name})
        assert client.wait_for("task_status")["config_name"] == config_name
        return client

    def simulated(self) -> tuple[str, dict[str, str]]:
        """moto's URL, and each config's instance, as the example logged them."""
        log = self.log()
        url = re.search(r"simulated AWS \(moto\) at (\S+)", log)
        assert url is not None, log
        instances = dict(re.findall(r"simulated (\w+): instance (i-\w+) in ", log))
        return url[1], instances

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Running]:
    """The example, started as documented, from the repository's root; ready once it
    answers ``GET /api/tasks``; always stopped."""
    port = free_port()
    log_path = tmp_path / "taskmaster.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "examples/taskmaster/app.py", "--simulate-aws", "--port", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running = Running(process, port, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, running.log()
            with contextlib.suppress(OSError):
                if send(port, "GET", "/api/tasks", f"127.0.0.1:{port}")[0] == 200:
                    break
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.1)
        yield running
    finally:
        running.stop()
    log = running.log()
    assert "Traceback" not in log, log
    assert "stopped" in log, log  # SIGTERM ended it cleanly


def test_the_example_changes_an_ip_watched_over_socketio(example: Running) -> None:
    moto_url, instances = example.simulated()
    assert sorted(instances) == ["aws01", "aws02", "aws03"]
    ec2 = boto3.client(
        "ec2",
        region_name="eu-west-1",
        endpoint_url=moto_url,
        aws_access_key_id="simulated",
        aws_secret_access_key="simulated",
    )
    old_ip = instance(ec2, instances["aws01"])["PublicIpAddress"]
    assert old_ip in addresses(ec2)
    assert example.get("/api/tasks/aws01")["status"]["metadata"] == {
        "aws_current_region": "eu-west-1",
        "instance_id": instances["aws01"],
    }

    client = example.watch("aws01")
    try:
        status, accepted = example.post("aws01", {"task_type": "change_ip"})
        assert status == 202, accepted
        status, busy = example.post("aws01", {"task_type": "change_ip"})
        assert status == 409, busy
        assert busy["error"]["task_id"] == accepted["task_id"]
        assert example.post("aws09", {"task_type": "change_ip"})[0] == 404
        status, bad = example.post("aws02", {"task_kind": "change_ip"})
        assert status == 400, bad
        assert bad["error"]["field"] == "task_kind"
        client.wait_for(
            "task_status_update",
            lambda p: p["update"]["event"] in ("task_completed", "task_failed"),
            timeout=WAIT,
        )
    finally:
        client.close()

    updates = [payload["update"] for payload in client.updates()]
    events = [u["event"] for u in updates]
    assert events[0] == "task_started", updates
    assert events[-1] == "task_completed", updates
    assert set(events[1:-1]) == {"task_progress"}, updates
    assert {u["task_id"] for u in updates} == {accepted["task_id"]}
    # The original's keys are there: status busy, then progress {stage, message}.
    assert updates[0]["status"] == "busy"
    assert updates[0]["task_type"] == "change_ip"
    assert all(u["progress"]["message"] for u in updates[1:-1])
    # Each stage in turn. The protocol lets the server merge progress it cannot send as
    # fast as it comes (never an outcome, and never the last progress before it): the
    # stages seen are in order and end with the last; the log has every one.
    seen = [u["progress"]["stage"] for u in updates[1:-1]]
    assert seen == [stage for stage in STAGES if stage in seen], seen
    assert seen[-1] == STAGES[-1]
    logged = re.findall(r"aws01: change_ip \d+% \[(\w+)\]", example.log())
    assert logged == STAGES
    result = updates[-1]["result"]
    new_ip = result["data"]["ip"]
    assert result == {"status": "success", "data": {"ip": new_ip, "previous_ip": old_ip}}
    assert updates[-1]["status"] == "idle"

    assert instance(ec2, instances["aws01"])["PublicIpAddress"] == new_ip
    assert old_ip not in addresses(ec2)
    assert example.get("/api/tasks/aws01")["status"]["last"]["result"] == result
    assert example.get("/api/tasks")["tasks"]["aws02"]["status"] == "idle"
    assert "aws01: change_ip completed" in example.log()


def test_the_dashboard_shows_the_new_ip(example: Running) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need playwright: run ./dev setup"
    )
    expect = sync_api.expect
    errors: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        try:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(example.url + "/")  # redirected to the dashboard, the original's path
            assert page.url == example.url + "/websocket"
            expect(page.locator('[data-role="connection"]')).to_have_attribute(
                "data-state", "connected", timeout=WAIT * 1000
            )
            card = page.locator('[data-subject="aws02"]')
            expect(card).to_be_visible(timeout=WAIT * 1000)
            expect(card).to_contain_text("us-east-1")
            card.locator('[data-role="subscribe"]').click()
            expect(card).to_have_attribute("data-subscribed", "true", timeout=WAIT * 1000)

            status, accepted = example.post("aws02", {"task_type": "change_ip"})
            assert status == 202, accepted
            expect(card).to_have_attribute("data-outcome", "completed", timeout=WAIT * 1000)
            expect(card).to_have_attribute("data-status", "idle")
            new_ip = example.get("/api/tasks/aws02")["status"]["last"]["result"]["data"]["ip"]
            outcome = card.locator('[data-role="outcome"]')
            expect(outcome).to_contain_text("completed")
            expect(outcome).to_contain_text(new_ip)
            log = page.locator('[data-role="log"]')
            expect(log.locator('[data-event="task_progress"]').first).to_contain_text("release")
            expect(log.locator('[data-event="task_completed"]')).to_contain_text(new_ip)
        finally:
            context.close()
    assert errors == []
