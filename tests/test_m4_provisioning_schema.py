"""4.1 provisioning and 4.2 schema: each witness metric by metric, bad input, the RDS plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from langgraph.checkpoint.postgres.base import MIGRATIONS

from m4_postgres import s1_provisioning, s2_schema
from shared import ROOT
from shared.errors import CheckpointError
from shared.infra import rds
from shared.witness import Witness
from tests.conftest import SMALL_SCALE, RunLesson

SECRET = "s3cret-pw"


def _local(url: str) -> bool:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname in {"127.0.0.1", "::1", "localhost"}


def _assert_4_1(w: Witness, local: bool) -> None:
    assert w.error is None
    assert 0 < w["server_ready_s"].value < 30
    assert w["child_process_connected"].value is True
    assert w["child_connected_over_tcp"].value is True
    assert w["psql_server_version"].value.split(".")[0].isdigit()
    assert w["psql_and_child_agree"].value is True
    if local:
        assert w["listens_on_loopback_only"].value is True
    assert w["malformed_url_refused"].value is True
    assert w["unreachable_url_refused"].value is True
    assert w["password_in_refusals"].value is False
    assert w["aws_http_calls"].value >= 8
    assert w["aws_calls_refused"].value == 0
    assert w["rds_instance_class"].value == "db.t4g.small"
    assert w["rds_engine"].value == "postgres"
    assert w["rds_backup_retention"].value == 7
    assert w["rds_storage"].value == 20
    assert w["rds_storage_encrypted"].value is True
    assert w["rds_publicly_accessible"].value is False
    assert w["rds_port"].value == 5432
    assert w["rds_subnet_zones"].value >= 2
    assert w["rds_uses_our_security_group"].value is True
    assert w["sg_ingress_rules"].value == 1
    assert w["sg_ingress_port"].value == "tcp 5432-5432"
    assert w["sg_ingress_source"].value == "10.20.1.0/24"
    assert w["sg_source_is_app_subnet"].value is True
    assert w["password_in_request"].value is False
    assert w["aws_resources_left"].value == 0
    assert w["moto_listening_after_exit"].value is False
    assert any("no AWS account touched" in line for line in w.evidence)
    assert w.passed


def test_4_1_embedded_server(lesson_run: RunLesson) -> None:
    run = lesson_run("m4_postgres.s1_provisioning")  # without DATABASE_URL: its own server
    w = run.witness
    _assert_4_1(w, local=True)
    assert any(line.startswith("server (embedded)") for line in w.evidence)
    assert (run.workdir / "m4_s1_provisioning" / "pg" / "PG_VERSION").exists()
    request = json.loads((run.workdir / "m4_s1_provisioning" / "rds_request.json").read_text())
    create = next(c["params"] for c in request if c["operation"] == "create_db_instance")
    assert create["MasterUserPassword"] == "***" and create["BackupRetentionPeriod"] == 7


def test_4_1_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_url)
    w = s1_provisioning.main(workdir=tmp_path)
    _assert_4_1(w, local=_local(pg_url))
    assert any(line.startswith("server (DATABASE_URL)") for line in w.evidence)
    assert not (tmp_path / "m4_s1_provisioning" / "pg").exists()  # nothing started


def test_4_2_schema(lesson_run: RunLesson) -> None:
    turns = 8
    w = lesson_run("m4_postgres.s2_schema").witness
    assert SMALL_SCALE["m4_postgres.s2_schema"] == {"turns": turns}
    assert w.error is None
    assert w["pg_tables"].value == 4
    assert w["sqlite_tables"].value == 2
    assert w["names_shared_with_sqlite"].value == "checkpoints"
    assert w["pg_primary_keys"].value == 4
    assert w["pg_thread_id_indexes"].value == 3
    assert w["migrations_recorded"].value == len(MIGRATIONS)
    assert w["migrations_added_by_second_setup"].value == 0
    assert w["same_conversation"].value is True
    assert w["checkpoints_pg"].value == 3 * turns  # input, START and chatbot per invoke
    assert w["writes_pg"].value == 3 * turns
    assert w["blob_rows_pg"].value < w["checkpoints_pg"].value * 3
    assert w["messages_blob_rows"].value == 2 * turns  # a new version at START and chatbot
    assert w["messages_copies_sqlite"].value == 3 * turns - 1  # all but the first input
    assert w["messages_copies_sqlite"].value > w["messages_blob_rows"].value
    assert w["inlined_channels_with_blobs"].value == 0
    assert w["demo_inlined"].value == "retries,score,topic,urgent"
    assert w["demo_blobs"].value == "files,messages"
    assert w["demo_loads_equal"].value is True
    assert 0 < w["payload_bytes_pg"].value < w["payload_bytes_sqlite"].value
    assert w["pg_to_sqlite_bytes"].value < 1
    assert 0 < w["last_turn_bytes_pg"].value < w["last_turn_bytes_sqlite"].value
    assert any("checkpoint_blobs(" in line and "blob bytea" in line for line in w.evidence)
    assert any("'branch:to:chatbot'" in line for line in w.evidence)  # None stays inline
    assert w.passed


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
