"""4.1 `m4_postgres/s1_provisioning.py`: the witness, metric by metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m4_postgres import s1_provisioning
from shared.witness import Witness
from tests.conftest import RunLesson

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
