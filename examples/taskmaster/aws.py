"""The AWS side of the example: the configs file, and where the EC2 clients come from.

The task code (:mod:`taskmaster.taskmanager`) asks a *client factory* for an EC2 client
for a config, and never knows which AWS it talks to. There are two factories:

- :func:`aws_client`, for real AWS: boto3 finds the credentials as it always does
  (environment, ``~/.aws``, an instance role), in the config's region, with the
  config's profile when it names one;
- :meth:`SimulatedAws.client`, for ``--simulate-aws``: moto's server, started in this
  process, with dummy credentials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3

__all__ = ["AwsConfig", "ConfigError", "SimulatedAws", "aws_client", "load_configs"]

log = logging.getLogger("taskmaster")

# -- the configs file ---------------------------------------------------------------------

#: What a config may say. Credentials never go in the file: name a profile instead.
CONFIG_FIELDS = {"name", "region", "instance_id", "profile"}
CREDENTIAL_FIELDS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}


@dataclasses.dataclass(frozen=True)
class AwsConfig:
    """One configuration: an EC2 instance in a region, and how to reach its account."""

    name: str
    region: str
    instance_id: str
    #: A boto3 profile (a section of ~/.aws/config); None uses the default credentials.
    profile: str | None = None


class ConfigError(ValueError):
    """The configs file is wrong; the message says where and how."""


def load_configs(path: str | Path) -> dict[str, AwsConfig]:
    """The configs in a JSON file, by name: a list of objects such as
    ``{"name": "aws01", "region": "eu-west-1", "instance_id": "i-0123456789abcdef0"}``,
    each with an optional ``"profile"``.

    :raises ConfigError: the file is missing, not JSON, or a config is wrong.
    """
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the configs file {str(path)!r}: {error}") from None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty JSON list of configs")
    configs: dict[str, AwsConfig] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{path}: config #{number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object")
        if CREDENTIAL_FIELDS & entry.keys():
            raise ConfigError(
                f"{where}: credentials do not belong in the configs file; give the config "
                'a "profile" from ~/.aws/config, or let boto3 find them (environment, '
                "instance role)"
            )
        unknown = sorted(entry.keys() - CONFIG_FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
        for field in ("name", "region", "instance_id"):
            if not isinstance(entry.get(field), str) or not entry[field]:
                raise ConfigError(f"{where}: {field!r} must be a non-empty string")
        if not isinstance(entry.get("profile", ""), str):
            raise ConfigError(f"{where}: 'profile' must be a string")
        config = AwsConfig(**entry)
        if config.name in configs:
            raise ConfigError(f"{where}: the name {config.name!r} is used twice")
        configs[config.name] = config
    return configs


# -- real AWS -----------------------------------------------------------------------------


def aws_client(config: AwsConfig) -> Any:
    """An EC2 client for ``config`` on real AWS, with the credentials boto3 finds.

    A new session each time: sessions are not thread-safe, and every task runs in a
    thread of its own.
    """
    session = boto3.Session(profile_name=config.profile, region_name=config.region)
    return session.client("ec2")


# -- simulated AWS ------------------------------------------------------------------------

#: Any image id does for moto.
SIMULATED_IMAGE = "ami-12c6146b"


class SimulatedAws:
    """moto's server in this process, for ``--simulate-aws``.

    ``with SimulatedAws() as aws:`` starts it on a free port of 127.0.0.1;
    :meth:`create_instances` gives each config an instance there, and :meth:`client`
    is the client factory to use instead of :func:`aws_client`.
    """

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer  # only needed to simulate

        # On 127.0.0.1, not moto's default 0.0.0.0: the simulated account is ours only.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def __enter__(self) -> SimulatedAws:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()

    def client(self, config: AwsConfig) -> Any:
        """An EC2 client for ``config`` on the simulated AWS. Its profile is ignored and
        the credentials are dummies, so that real ones can never be used by mistake."""
        session = boto3.Session(
            aws_access_key_id="simulated",
            aws_secret_access_key="simulated",
            region_name=config.region,
        )
        return session.client("ec2", endpoint_url=self.endpoint_url)

    def create_instances(self, configs: dict[str, AwsConfig]) -> dict[str, AwsConfig]:
        """Start an instance for each config in its region, with an Elastic IP, and
        return the configs with those instances' ids (the ids in the file cannot exist
        in the simulation)."""
        created = {}
        for name, config in configs.items():
            ec2 = self.client(config)
            reservation = ec2.run_instances(
                ImageId=SIMULATED_IMAGE, InstanceType="t3.micro", MinCount=1, MaxCount=1
            )
            instance_id = reservation["Instances"][0]["InstanceId"]
            address = ec2.allocate_address(Domain="vpc")
            ec2.associate_address(InstanceId=instance_id, AllocationId=address["AllocationId"])
            log.info(
                "simulated %s: instance %s in %s, Elastic IP %s",
                name,
                instance_id,
                config.region,
                address["PublicIp"],
            )
            created[name] = dataclasses.replace(config, instance_id=instance_id)
        return created
