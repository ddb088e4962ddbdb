"""4.1 provisioning and 4.2 schema: each witness metric by metric, bad input, the RDS plan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from m4_postgres import s1_provisioning, s2_schema
from shared import ROOT
from shared.errors import CheckpointError
from shared.infra import rds

SECRET = "s3cret-pw"






# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("script", [s1_provisioning, s2_schema])
def test_malformed_database_url(script: ModuleType, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://ckpt:{SECRET}@db.internal/checkpoints")
    w = script.main(workdir=tmp_path)
    assert not w.passed and w.error is not None
    assert "is not a PostgreSQL URL" in w.error and "ckpt:***@" in w.error
    assert SECRET not in w.error and "\n" not in w.error
    assert not w.metrics


def test_unreachable_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://ckpt:{SECRET}@127.0.0.1:1/checkpoints")
    w = s1_provisioning.main(workdir=tmp_path)
    assert w.error is not None and w.error.startswith("Could not connect to PostgreSQL")
    assert SECRET not in w.error and "ckpt:***@" in w.error and "\n" not in w.error


def test_cli_bad_url_prints_one_masked_sentence(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"postgres://ckpt:{SECRET}@/checkpoints",
           "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    out = subprocess.run([sys.executable, "-m", "m4_postgres.s1_provisioning", "--workdir",
                          str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "is not a PostgreSQL URL" in out.stdout and "FAILED" in out.stdout
    assert SECRET not in out.stdout + out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(("change", "words"), [
    ({"app_cidr": "192.168.1.0/24"}, "outside the VPC"),
    ({"app_cidr": "10.20.11.0/24"}, "overlap"),
    ({"app_cidr": "10.20.1.0/33"}, "RDS plan"),
    ({"backup_days": 0}, "1-35"),
    ({"storage_gib": 10}, "20-65,536 GiB"),
    ({"storage_gib": 200}, "ceiling must be above it"),
])
def test_bad_plan_refused_before_anything_starts(tmp_path: Path, change: dict,
                                                 words: str) -> None:
    w = s1_provisioning.main(workdir=tmp_path, **change)
    assert w.error is not None and words in w.error and not w.metrics
    assert list((tmp_path / "m4_s1_provisioning").iterdir()) == []


def test_too_few_turns_refused(tmp_path: Path) -> None:
    w = s2_schema.main(workdir=tmp_path, turns=0)
    assert w.error is not None and "at least 1 turn" in w.error and not w.metrics


def test_plan_refuses_port_outside_rds_range() -> None:
    with pytest.raises(CheckpointError, match="1150-65535"):
        rds.RdsPlan(port=80).check()


def test_unreachable_aws_endpoint_is_one_sentence() -> None:
    aws = rds.AwsClients.connect("http://127.0.0.1:1")
    with pytest.raises(CheckpointError, match="is unreachable for ec2 create_vpc") as err:
        rds.provision(aws, rds.RdsPlan(), SECRET)
    assert SECRET not in str(err.value) and "\n" not in str(err.value)


def test_failed_provisioning_leaves_nothing_behind() -> None:
    plan = rds.RdsPlan(engine="no-such-engine")
    with rds.moto_server() as endpoint:
        aws = rds.AwsClients.connect(endpoint)
        with pytest.raises(CheckpointError, match="refused rds create_db_instance") as err:
            rds.provision(aws, plan, SECRET)
        vpcs = [v for v in aws.ec2.describe_vpcs()["Vpcs"] if v["CidrBlock"] == plan.vpc_cidr]
        groups = aws.rds.describe_db_subnet_groups()["DBSubnetGroups"]
    assert SECRET not in str(err.value)
    assert vpcs == [] and groups == []  # the VPC, subnets and subnet group were rolled back


def test_masked_params_leave_the_request_intact() -> None:
    params = {"MasterUserPassword": SECRET, "Port": 5432}
    assert rds.masked_params(params) == {"MasterUserPassword": "***", "Port": 5432}
    assert params["MasterUserPassword"] == SECRET


def test_psql_failure_never_shows_the_password() -> None:
    with pytest.raises(CheckpointError, match="psql failed") as err:
        rds.psql(f"postgresql://ckpt:{SECRET}@127.0.0.1:1/checkpoints", "SELECT 1")
    assert SECRET not in str(err.value)


def test_psql_with_password_in_url(pg_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    if parts.password is None:  # trust authentication ignores it; the URL still must work
        pg_url = parts._replace(netloc=f"{parts.username}:{SECRET}@{parts.hostname}:"
                                       f"{parts.port}").geturl()
    assert rds.psql(pg_url, "SELECT 40 + 2", "SELECT 'ok'") == ["42", "ok"]
