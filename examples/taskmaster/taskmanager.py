"""The TaskManager: runs AWS tasks on the configs, one at a time per config, and reports
each step to a taskevents :class:`~taskevents.Emitter`.

It knows nothing of Flask or Socket.IO. Whoever watches the emitter (the Flask
extension's Socket.IO adapter and dashboard, the logging adapter, a test) sees every
task start, progress and end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from taskevents import Emitter, TaskEvent, TaskTracker
from taskmaster.aws import AwsConfig

__all__ = ["AwsTaskError", "ClientFactory", "InstanceNotFound", "TaskManager"]

log = logging.getLogger("taskmaster")

#: ``client_factory(config) -> boto3 EC2 client``: real AWS, or the simulation.
ClientFactory = Callable[[AwsConfig], Any]
#: What boto3 raises: AWS said no (ClientError), or it could not ask (no credentials,
#: no network: BotoCoreError).
AWS_ERRORS = (ClientError, BotoCoreError)


class AwsTaskError(Exception):
    """A task could not do its job; the message says why, for people. It is what the
    dashboard shows as the task's error."""


class InstanceNotFound(AwsTaskError):
    """The config's instance does not exist in its region."""


def error_code(error: Exception) -> str:
    """AWS's code for what went wrong (``"InvalidInstanceID.NotFound"``), or ``""``
    when AWS was not reached."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def aws_error(error: Exception) -> str:
    """What went wrong in a boto3 call, in one line: ``"Code: message"``."""
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "")
        return f"{error_code(error)}: {message}" if message else error_code(error)
    return str(error)  # BotoCoreError: "Unable to locate credentials", ...


@dataclasses.dataclass(frozen=True)
class PublicAddress:
    """An instance's public IPv4 address. ``allocation_id`` is None unless it is an
    Elastic IP of the account (else AWS assigned it, and takes it back by itself);
    ``association_id`` is that Elastic IP's association with the instance."""

    ip: str
    allocation_id: str | None = None
    association_id: str | None = None


class TaskManager:
    """Runs tasks on the configs, in the background, and reports them to ``emitter``.

    :param emitter: where the tasks report. It is exclusive (the default), so a second
        task on a busy config is refused with :class:`~taskevents.SubjectBusy`.
    :param configs: the configs, by name.
    :param client_factory: gives the EC2 client for a config (:func:`taskmaster.aws.aws_client`,
        or the simulation's).
    :param start_background_task: runs ``function(*args)`` in the background and returns
        at once: ``socketio.start_background_task``, which suits the Socket.IO
        server's async mode.
    """

    def __init__(
        self,
        emitter: Emitter,
        configs: dict[str, AwsConfig],
        client_factory: ClientFactory,
        start_background_task: Callable[..., Any],
    ) -> None:
        self.emitter = emitter
        self.configs = configs
        self.client_factory = client_factory
        self.start_background_task = start_background_task
        #: The task types, by name: each runs with the config and the task's tracker
        #: and returns the task's result.
        self.tasks: dict[str, Callable[[AwsConfig, TaskTracker], Any]] = {
            "change_ip": self.change_ip,
        }
        self._running = 0  # tasks started and not ended yet
        self._idle = threading.Condition()

    # -- starting and running ------------------------------------------------------------

    def start(self, config_name: str, task_type: str) -> TaskEvent:
        """Start a task on a config, in the background; its ``task_started`` event.

        :raises KeyError: no such config or task type.
        :raises taskevents.SubjectBusy: the config runs a task already.
        """
        config = self.configs[config_name]
        run = self.tasks[task_type]
        # Entering the tracker here, in the caller's thread, emits task_started now, or
        # raises SubjectBusy (the caller answers 409). The ExitStack hands the open
        # tracker over to the background task, whose `with` block ends it.
        job = contextlib.ExitStack()
        task = job.enter_context(self.emitter.track(config_name, task_type))
        assert task.started_event is not None
        with self._idle:
            self._running += 1
        self.start_background_task(self._run, job, task, run, config)
        return task.started_event

    def _run(
        self,
        job: contextlib.ExitStack,
        task: TaskTracker,
        run: Callable[[AwsConfig, TaskTracker], Any],
        config: AwsConfig,
    ) -> None:
        try:
            # Leaving this block ends the task: task_completed with task.result, or
            # task_failed with the exception's type and message.
            with job:
                task.result = run(config, task)
        except AwsTaskError:
            pass  # reported as task_failed, with a message for people; nothing to add
        except Exception:
            # A bug, not an AWS problem: reported as task_failed too, and logged in full.
            log.exception("%s: %s failed unexpectedly", config.name, task.task_type)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the running tasks to end (before exiting:
        a task cut short could leave an address allocated); whether they all have."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    # -- the tasks -----------------------------------------------------------------------

    def change_ip(self, config: AwsConfig, task: TaskTracker) -> dict[str, Any]:
        """Give the config's instance a new public address: allocate an Elastic IP,
        move the instance to it, then release the old address if it was an Elastic IP
        of the account (an auto-assigned one goes back to AWS by itself).

        Returns the original TaskMaster's result, ``{"status": "success", "data":
        {"ip": NEW, "previous_ip": OLD}}`` (OLD is None if the instance had no public
        address).

        :raises AwsTaskError: a step failed. If the new address could not be
            associated, the old one is put back and the new one released.
        """
        try:
            ec2 = self.client_factory(config)
        except AWS_ERRORS as error:  # e.g. the config's profile does not exist
            raise AwsTaskError(f"no EC2 client for {config.name}: {aws_error(error)}") from None
        instance = config.instance_id

        task.progress(10, "lookup", f"Looking up {instance} in {config.region}...")
        old = self._public_address(ec2, config)

        task.progress(30, "allocate", "Allocating a new Elastic IP...")
        try:
            new = ec2.allocate_address(Domain="vpc")
        except AWS_ERRORS as error:
            raise AwsTaskError(
                f"could not allocate an Elastic IP in {config.region}: {aws_error(error)}"
            ) from None
        new_ip, new_allocation = new["PublicIp"], new["AllocationId"]

        task.progress(60, "associate", f"Associating {new_ip} with {instance}...")
        try:
            if old is not None and old.association_id is not None:
                ec2.disassociate_address(AssociationId=old.association_id)
            ec2.associate_address(InstanceId=instance, AllocationId=new_allocation)
        except AWS_ERRORS as error:
            problem = f"could not associate {new_ip} with {instance}: {aws_error(error)}"
            raise AwsTaskError(self._roll_back(ec2, instance, old, new, problem)) from None

        if old is None:
            task.progress(85, "release", f"{instance} had no public address: nothing to release")
        elif old.allocation_id is None:
            task.progress(85, "release", f"{old.ip} was auto-assigned: AWS takes it back by itself")
        else:
            task.progress(85, "release", f"Releasing the old Elastic IP {old.ip}...")
            try:
                ec2.release_address(AllocationId=old.allocation_id)
            except AWS_ERRORS as error:
                raise AwsTaskError(
                    f"{instance} has its new address {new_ip}, but the old one, {old.ip}, "
                    f"could not be released ({aws_error(error)}): release "
                    f"{old.allocation_id} by hand"
                ) from None

        return {
            "status": "success",
            "data": {"ip": new_ip, "previous_ip": None if old is None else old.ip},
        }

    # -- the steps, with errors for people -------------------------------------------------

    @staticmethod
    def _public_address(ec2: Any, config: AwsConfig) -> PublicAddress | None:
        """The instance's public address now, or None if it has none."""
        instance, region = config.instance_id, config.region
        missing = InstanceNotFound(f"instance {instance} not found in {region}")
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance])["Reservations"]
        except AWS_ERRORS as error:
            if error_code(error).startswith("InvalidInstanceID"):
                raise missing from None  # InvalidInstanceID.NotFound, or .Malformed
            raise AwsTaskError(f"could not look up {instance}: {aws_error(error)}") from None
        found = [i for reservation in reservations for i in reservation["Instances"]]
        if not found:
            raise missing
        state = found[0]["State"]["Name"]
        if state in ("shutting-down", "terminated"):
            raise AwsTaskError(f"instance {instance} in {region} is {state}")
        ip = found[0].get("PublicIpAddress")
        if ip is None:
            return None
        # An Elastic IP of the account, or one AWS assigned (then none is listed)?
        try:
            addresses = ec2.describe_addresses(Filters=[{"Name": "public-ip", "Values": [ip]}])
        except AWS_ERRORS as error:
            raise AwsTaskError(f"could not look up the address {ip}: {aws_error(error)}") from None
        for address in addresses["Addresses"]:
            if address.get("AllocationId"):
                return PublicAddress(ip, address["AllocationId"], address.get("AssociationId"))
        return PublicAddress(ip)

    @staticmethod
    def _roll_back(
        ec2: Any, instance: str, old: PublicAddress | None, new: dict[str, Any], problem: str
    ) -> str:
        """Undo a failed association: put the old Elastic IP back on the instance, and
        release the new one (no leaked addresses). The error message to report."""
        if old is not None and old.allocation_id is not None:
            try:
                ec2.associate_address(InstanceId=instance, AllocationId=old.allocation_id)
            except AWS_ERRORS as error:
                problem += f"; putting {old.ip} back failed too ({aws_error(error)})"
        try:
            ec2.release_address(AllocationId=new["AllocationId"])
        except AWS_ERRORS as error:
            return (
                f"{problem}; releasing {new['PublicIp']} failed too ({aws_error(error)}): "
                f"release {new['AllocationId']} by hand"
            )
        return f"{problem} ({new['PublicIp']} was released again)"
