"""PostgreSQL on AWS RDS as code, rehearsed against moto's server on 127.0.0.1.

    with moto_server() as endpoint:                     # http://127.0.0.1:PORT, stopped on exit
        aws = AwsClients.connect(endpoint)               # boto3 EC2 + RDS over real HTTP
        made = provision(aws, RdsPlan(), password)       # VPC, subnets, SG, subnet group, instance
        seen = read_back(aws, made)                      # what describe_* says the account holds
        destroy(aws, made)

``provision`` takes any boto3 clients: built for a real account (``AwsClients.connect(None)``
uses the default credential chain) it creates a billable instance and waits minutes for it;
against moto it answers at once and the endpoint it returns is a name nothing listens on.
Every call made is recorded with its parameters, the password masked, so the exact request
can be reviewed or replayed. botocore validates each parameter against the same service
model AWS itself publishes, so a request moto accepts is well-formed for AWS too.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.errors import CheckpointError
from shared.infra.postgres import bin_dir, mask_url

# moto accepts any credentials; these are placeholders, not secrets.
_MOTO_KEY_ID = "moto-local"
_MOTO_SECRET = "moto-local-secret"  # noqa: S105
_SECRET_PARAMS = ("MasterUserPassword",)


@dataclass(frozen=True)
class RdsPlan:
    """What to create: one PostgreSQL instance reachable on its port from the app subnet only."""

    identifier: str = "ckpt-checkpoints"
    instance_class: str = "db.t4g.small"
    engine: str = "postgres"
    engine_version: str = "17"  # a major version: RDS picks its default minor release
    storage_gib: int = 20
    max_storage_gib: int = 100  # storage autoscaling ceiling: checkpoints only ever grow
    storage_type: str = "gp3"
    backup_days: int = 7
    backup_window: str = "03:00-03:30"
    maintenance_window: str = "sun:04:00-sun:04:30"
    port: int = 5432
    db_name: str = "checkpoints"
    username: str = "ckpt_admin"
    vpc_cidr: str = "10.20.0.0/16"
    app_cidr: str = "10.20.1.0/24"
    db_cidrs: tuple[str, str] = ("10.20.11.0/24", "10.20.12.0/24")  # RDS wants two AZs
    region: str = "us-east-1"

    def check(self) -> RdsPlan:
        """Refuse a plan AWS would refuse (or that would open the port too widely)."""
        try:
            vpc = ipaddress.ip_network(self.vpc_cidr)
            subnets = [ipaddress.ip_network(c) for c in (self.app_cidr, *self.db_cidrs)]
        except ValueError as exc:
            raise CheckpointError(f"RDS plan: {exc}: write networks such as 10.20.1.0/24."
                                  ) from None
        for net in subnets:
            if not net.subnet_of(vpc):  # type: ignore[arg-type]
                raise CheckpointError(f"RDS plan: subnet {net} is outside the VPC {vpc}: "
                                      "choose subnets inside the VPC's range.")
        if any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:]):
            raise CheckpointError("RDS plan: the app and database subnets overlap: give each "
                                  "its own range.")
        if not 1 <= self.backup_days <= 35:
            raise CheckpointError(f"RDS plan: backup retention {self.backup_days} days is "
                                  "outside RDS's 1-35: automated backups need at least 1.")
        if not 20 <= self.storage_gib < self.max_storage_gib <= 65536:
            raise CheckpointError(f"RDS plan: storage {self.storage_gib} GiB with an autoscaling "
                                  f"ceiling of {self.max_storage_gib} GiB: PostgreSQL on gp3 "
                                  "takes 20-65,536 GiB, and the ceiling must be above it.")
        if not 1150 <= self.port <= 65535:
            raise CheckpointError(f"RDS plan: port {self.port} is outside RDS's 1150-65535.")
        return self


@dataclass
class Provisioned:
    """The ids the account gave back, and every call made (password masked)."""

    vpc_id: str = ""
    app_subnet_id: str = ""
    db_subnet_ids: list[str] = field(default_factory=list)
    security_group_id: str = ""
    subnet_group: str = ""
    instance_id: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)

    def call(self, operation: str) -> dict[str, Any]:
        """The parameters of the first call named ``operation`` (as recorded, masked)."""
        return next(c["params"] for c in self.calls if c["operation"] == operation)


def masked_params(params: dict[str, Any]) -> dict[str, Any]:
    """A copy of request parameters with every secret replaced by ``***``."""
    out = copy.deepcopy(params)
    for key in _SECRET_PARAMS:
        if key in out:
            out[key] = "***"
    return out


@dataclass
class AwsClients:
    """EC2 and RDS clients; ``http`` lists (operation, HTTP status) of every response."""

    ec2: Any
    rds: Any
    endpoint: str | None
    http: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def connect(cls, endpoint: str | None, region: str = "us-east-1") -> AwsClients:
        """Clients for ``endpoint`` (moto) with placeholder keys, or AWS when None."""
        import boto3
        from botocore.config import Config

        # Fail in seconds, not minutes, when the endpoint is down.
        config = Config(connect_timeout=2, read_timeout=30,
                        retries={"max_attempts": 2, "mode": "standard"})
        keys = ({"aws_access_key_id": _MOTO_KEY_ID, "aws_secret_access_key": _MOTO_SECRET}
                if endpoint else {})
        made = cls(*(boto3.client(s, endpoint_url=endpoint, region_name=region, config=config,
                                  **keys) for s in ("ec2", "rds")), endpoint=endpoint)
        for client in (made.ec2, made.rds):
            client.meta.events.register("after-call", made._record)
        return made

    def _record(self, http_response: Any, model: Any, **_: Any) -> None:
        self.http.append((model.name, http_response.status_code))


def _send(aws: AwsClients, made: Provisioned, service: str, operation: str,
          **params: Any) -> dict[str, Any]:
    """One API call, recorded; an AWS refusal becomes one sentence."""
    from botocore.exceptions import BotoCoreError, ClientError

    made.calls.append({"service": service, "operation": operation,
                       "params": masked_params(params)})
    client = aws.ec2 if service == "ec2" else aws.rds
    where = mask_url(aws.endpoint) if aws.endpoint else "AWS"
    try:
        return getattr(client, operation)(**params)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise CheckpointError(f"{where} refused {service} {operation} ({err.get('Code')}: "
                              f"{err.get('Message')}): fix the plan or the credentials."
                              ) from None
    except BotoCoreError as exc:
        raise CheckpointError(f"{where} is unreachable for {service} {operation} "
                              f"({type(exc).__name__}): check the endpoint and network."
                              ) from None


def provision(aws: AwsClients, plan: RdsPlan, password: str) -> Provisioned:
    """Create the network, the firewall rule and the instance; wait until it is available.

    If any step fails, what was already made is destroyed before the error is raised.
    """
    made = Provisioned()
    try:
        _create(aws, plan.check(), password, made)
    except BaseException:
        with suppress(Exception):  # best effort: leave no half-built network behind
            destroy(aws, made)
        raise
    return made


def _create(aws: AwsClients, plan: RdsPlan, password: str, made: Provisioned) -> None:
    tags = [{"Key": "app", "Value": "langgraph-checkpoints"}]
    made.vpc_id = _send(aws, made, "ec2", "create_vpc", CidrBlock=plan.vpc_cidr)["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in aws.ec2.describe_availability_zones()["AvailabilityZones"]]
    made.app_subnet_id = _send(aws, made, "ec2", "create_subnet", VpcId=made.vpc_id,
                               CidrBlock=plan.app_cidr, AvailabilityZone=zones[0]
                               )["Subnet"]["SubnetId"]
    for cidr, zone in zip(plan.db_cidrs, zones, strict=False):
        made.db_subnet_ids.append(_send(aws, made, "ec2", "create_subnet", VpcId=made.vpc_id,
                                        CidrBlock=cidr, AvailabilityZone=zone
                                        )["Subnet"]["SubnetId"])
    made.security_group_id = _send(
        aws, made, "ec2", "create_security_group", GroupName=f"{plan.identifier}-db",
        Description=f"PostgreSQL {plan.port} from the app subnet only", VpcId=made.vpc_id,
    )["GroupId"]
    # The only way in: TCP on the database port from the app subnet's range.
    _send(aws, made, "ec2", "authorize_security_group_ingress", GroupId=made.security_group_id,
          IpPermissions=[{"IpProtocol": "tcp", "FromPort": plan.port, "ToPort": plan.port,
                          "IpRanges": [{"CidrIp": plan.app_cidr,
                                        "Description": "app subnet"}]}])
    made.subnet_group = _send(
        aws, made, "rds", "create_db_subnet_group", DBSubnetGroupName=f"{plan.identifier}-net",
        DBSubnetGroupDescription="private subnets for the checkpoint database",
        SubnetIds=made.db_subnet_ids, Tags=tags)["DBSubnetGroup"]["DBSubnetGroupName"]
    made.instance_id = _send(
        aws, made, "rds", "create_db_instance", DBInstanceIdentifier=plan.identifier,
        DBInstanceClass=plan.instance_class, Engine=plan.engine,
        EngineVersion=plan.engine_version, DBName=plan.db_name, Port=plan.port,
        MasterUsername=plan.username, MasterUserPassword=password,
        AllocatedStorage=plan.storage_gib, MaxAllocatedStorage=plan.max_storage_gib,
        StorageType=plan.storage_type, StorageEncrypted=True,
        BackupRetentionPeriod=plan.backup_days, PreferredBackupWindow=plan.backup_window,
        PreferredMaintenanceWindow=plan.maintenance_window, CopyTagsToSnapshot=True,
        DBSubnetGroupName=made.subnet_group, VpcSecurityGroupIds=[made.security_group_id],
        PubliclyAccessible=False, DeletionProtection=True, Tags=tags,
    )["DBInstance"]["DBInstanceIdentifier"]
    # A real instance takes minutes to become available; moto's is available at once.
    aws.rds.get_waiter("db_instance_available").wait(
        DBInstanceIdentifier=made.instance_id, WaiterConfig={"Delay": 15, "MaxAttempts": 80})


def read_back(aws: AwsClients, made: Provisioned) -> dict[str, Any]:
    """What the account now holds, from describe_* calls only (nothing from the plan)."""
    db = aws.rds.describe_db_instances(DBInstanceIdentifier=made.instance_id)["DBInstances"][0]
    group = aws.ec2.describe_security_groups(GroupIds=[made.security_group_id]
                                             )["SecurityGroups"][0]
    app = aws.ec2.describe_subnets(SubnetIds=[made.app_subnet_id])["Subnets"][0]
    net = db["DBSubnetGroup"]
    return {
        "status": db["DBInstanceStatus"], "instance_class": db["DBInstanceClass"],
        "engine": db["Engine"], "engine_version": db["EngineVersion"],
        "backup_days": db["BackupRetentionPeriod"], "backup_window": db["PreferredBackupWindow"],
        "storage_gib": db["AllocatedStorage"], "max_storage_gib": db.get("MaxAllocatedStorage"),
        "storage_type": db["StorageType"], "encrypted": db["StorageEncrypted"],
        "public": db["PubliclyAccessible"], "deletion_protection": db["DeletionProtection"],
        "host": db["Endpoint"]["Address"], "port": db["Endpoint"]["Port"],
        "db_name": db.get("DBName"), "username": db["MasterUsername"],
        "security_groups": [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]],
        "subnet_group_vpc": net["VpcId"],
        "subnet_zones": sorted({s["SubnetAvailabilityZone"]["Name"] for s in net["Subnets"]}),
        "app_subnet_cidr": app["CidrBlock"],
        "ingress": [(p["IpProtocol"], p.get("FromPort"), p.get("ToPort"),
                     [r["CidrIp"] for r in p.get("IpRanges", [])],
                     [g["GroupId"] for g in p.get("UserIdGroupPairs", [])])
                    for p in group["IpPermissions"]],
    }


def connection_url(seen: dict[str, Any], password: str) -> str:
    """The application's DATABASE_URL for the instance (TLS required), password masked."""
    return mask_url(f"postgresql://{seen['username']}:{password}@{seen['host']}:{seen['port']}/"
                    f"{seen['db_name']}?sslmode=require")


def destroy(aws: AwsClients, made: Provisioned) -> int:
    """Delete what ``provision`` made, newest first; returns how many of them remain."""
    from botocore.exceptions import ClientError

    if made.instance_id:  # deletion protection is on: lift it first, as on a real account
        aws.rds.modify_db_instance(DBInstanceIdentifier=made.instance_id,
                                   DeletionProtection=False, ApplyImmediately=True)
        aws.rds.delete_db_instance(DBInstanceIdentifier=made.instance_id,
                                   SkipFinalSnapshot=True)
        aws.rds.get_waiter("db_instance_deleted").wait(
            DBInstanceIdentifier=made.instance_id, WaiterConfig={"Delay": 15, "MaxAttempts": 80})
    if made.subnet_group:
        aws.rds.delete_db_subnet_group(DBSubnetGroupName=made.subnet_group)
    if made.security_group_id:
        aws.ec2.delete_security_group(GroupId=made.security_group_id)
    for subnet in (made.app_subnet_id, *made.db_subnet_ids):
        if subnet:
            aws.ec2.delete_subnet(SubnetId=subnet)
    if made.vpc_id:
        aws.ec2.delete_vpc(VpcId=made.vpc_id)

    def exists(made_id: str, call: Any, **kw: Any) -> int:
        if not made_id:  # never created
            return 0
        try:
            return int(bool(call(**kw)))
        except ClientError:  # NotFound: gone
            return 0

    return (exists(made.instance_id, aws.rds.describe_db_instances,
                   DBInstanceIdentifier=made.instance_id)
            + exists(made.subnet_group, aws.rds.describe_db_subnet_groups,
                     DBSubnetGroupName=made.subnet_group)
            + exists(made.security_group_id, aws.ec2.describe_security_groups,
                     GroupIds=[made.security_group_id])
            + sum(exists(s, aws.ec2.describe_subnets, SubnetIds=[s])
                  for s in (made.app_subnet_id, *made.db_subnet_ids))
            + exists(made.vpc_id, aws.ec2.describe_vpcs, VpcIds=[made.vpc_id]))


def psql(url: str, *commands: str) -> list[str]:
    """The bundled psql on ``url``, one output line per command: the seed's check of an instance.

    The password goes to psql by ``PGPASSWORD``, never on its command line.
    """
    parts = urlsplit(url)
    env = {"PATH": os.environ.get("PATH", ""), "PGCONNECT_TIMEOUT": "5"}
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        url = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", "@", 1)).geturl()
    args = [str(bin_dir() / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]
    out = subprocess.run([*args, *(a for c in commands for a in ("-c", c))], env=env,
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise CheckpointError(f"psql failed on {mask_url(url)}: {' '.join(out.stderr.split())}")
    return out.stdout.splitlines()


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's AWS API server on a free 127.0.0.1 port for the block; yields its endpoint URL.

    moto keeps its accounts in this process's memory, beyond one server's life: ``destroy``
    what you ``provision``, so a second run in the same process starts from nothing.
    """
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request to stderr unless its logger already has a level.
    access_log = logging.getLogger("werkzeug")
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # port 0: the OS picks a free port, no race with a probe socket
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        # stop() ends serve_forever but leaves the listening socket open; close it too.
        wsgi = getattr(server, "_server", None)
        if wsgi is not None:
            wsgi.server_close()
