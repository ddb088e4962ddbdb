"""4.1 PostgreSQL provisioning: a real server reached over TCP, and the RDS instance as code.

The server is ``DATABASE_URL`` or the embedded PostgreSQL started here (data under the
workdir, on 127.0.0.1 only). A fresh interpreter connects with psycopg over TCP, the bundled
``psql`` reports its version and ``listen_addresses``, and this machine's LAN address refuses
the port. Then the seed's RDS instance (db.t4g.small, PostgreSQL, 7 days of automated
backups, encrypted gp3, port 5432 open to the app subnet only) is created with boto3 over
HTTP against moto's server on 127.0.0.1, read back with describe_* calls, and destroyed; the
request, password masked, is written as JSON: what a real account would receive. A malformed
and an unreachable URL are refused with one sentence, the password masked.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import shared.witness
from shared.errors import CheckpointError
from shared.infra import rds
from shared.infra.postgres import check_url, mask_url, postgres_server, wait_until_ready
from shared.proc import run_child
from shared.witness import Witness, fresh_workdir


def probe(url: str | None = None) -> dict[str, Any]:
    """Runs in a fresh interpreter: connect over TCP and say what the server sees."""
    import psycopg

    with psycopg.connect(url or os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        version, client = conn.execute("SELECT current_setting('server_version'), "
                                       "host(inet_client_addr())").fetchone()
    return {"pid": os.getpid(), "version": version, "client_addr": client}


def refusal(fn: Any) -> str:
    """The refusal's message as one line (psycopg's reason may span lines)."""
    try:
        fn()
    except CheckpointError as exc:
        return " ".join(str(exc).split())
    return ""


def main(workdir: Path | None = None, app_cidr: str = "10.20.1.0/24", backup_days: int = 7,
         storage_gib: int = 20) -> Witness:
    w = Witness("4.1", "PostgreSQL provisioning")
    wd = fresh_workdir(workdir, "m4_s1_provisioning")
    source = "DATABASE_URL" if os.environ.get("DATABASE_URL", "").strip() else "embedded"
    try:  # refuse a plan AWS would refuse before anything starts
        plan = rds.RdsPlan(app_cidr=app_cidr, backup_days=backup_days,
                           storage_gib=storage_gib).check()
    except CheckpointError as exc:
        w.error = str(exc)
        return w

    # --- the server: started (or reached), then checked from two other processes -----------
    with ExitStack() as stack:
        started = time.perf_counter()
        try:
            url = stack.enter_context(postgres_server(wd / "pg"))
        except CheckpointError as exc:
            w.error = " ".join(str(exc).split())
            return w
        ready_s = time.perf_counter() - started
        child = run_child("m4_postgres.s1_provisioning:probe",
                          url=None if urlsplit(url).password else url)
        version, listen = rds.psql(url, "SHOW server_version", "SHOW listen_addresses")
        host, port = urlsplit(url).hostname or "", urlsplit(url).port or 5432
    local = host in {"127.0.0.1", "::1", "localhost"}  # else a remote server: no claim
    loopback_only = {a.strip() for a in listen.split(",")} <= {"127.0.0.1", "::1", "localhost"}
    w.show(f"server ({source}): {mask_url(url)}, ready in {ready_s:.2f} s "
           + ("(initdb, start, first connection)" if source == "embedded" else "(connect)"))
    w.show(f"child pid {child['pid']} (we are {os.getpid()}): PostgreSQL {child['version']}, "
           f"connected from {child['client_addr']}")
    w.show(f"psql: server_version={version} listen_addresses={listen} (port {port})")
    w.metric("server_ready_s", round(ready_s, 3), "s", "< 30")
    w.metric("child_process_connected", child["pid"] != os.getpid(), target="== yes")
    w.metric("child_connected_over_tcp", child["client_addr"] is not None, target="== yes")
    w.metric("psql_server_version", version)
    w.metric("psql_and_child_agree", version == child["version"], target="== yes")
    w.metric("listens_on_loopback_only", loopback_only, target="== yes" if local else None)

    # --- bad input: one sentence each, the password masked ---------------------------------
    bad = refusal(lambda: check_url("mysql://ckpt:s3cret-pw@db.internal/checkpoints"))
    down = refusal(lambda: wait_until_ready("postgresql://ckpt:s3cret-pw@127.0.0.1:1/checkpoints",
                                            timeout=1))
    w.show(f"malformed: {bad}")
    w.show(f"unreachable: {down}")
    w.metric("malformed_url_refused", "is not a PostgreSQL URL" in bad, target="== yes")
    w.metric("unreachable_url_refused", "Could not connect" in down, target="== yes")
    w.metric("password_in_refusals", "s3cret" in bad + down, target="== no")

    # --- provisioning as code: the RDS request, against moto's server on 127.0.0.1 ---------
    password = secrets.token_urlsafe(18)  # never shown: masked in every line and file
    with rds.moto_server() as endpoint:
        aws = rds.AwsClients.connect(endpoint, plan.region)
        made = rds.provision(aws, plan, password)
        try:
            calls, seen = list(aws.http), rds.read_back(aws, made)
        finally:  # whatever happens, leave the (rehearsal) account empty
            left = rds.destroy(aws, made)
    request = json.dumps(made.calls, indent=2)
    (wd / "rds_request.json").write_text(request)
    w.show(f"ran against moto at {endpoint} (no AWS account touched): {len(calls)} HTTP calls")
    w.show("create_db_instance as a real account would receive it: "
           + json.dumps(made.call("create_db_instance")))
    w.show("ingress: " + json.dumps(made.call("authorize_security_group_ingress")["IpPermissions"]))
    w.show(f"connection string (moto's name: nothing listens there): "
           f"{rds.connection_url(seen, password)}")
    w.metric("aws_http_calls", len(calls), "calls", ">= 8")
    w.metric("aws_calls_refused", sum(s >= 300 for _, s in calls), "calls", "== 0")
    w.metric("rds_instance_class", seen["instance_class"], target=f"== {plan.instance_class}")
    w.metric("rds_engine", seen["engine"], target="== postgres")
    w.metric("rds_backup_retention", seen["backup_days"], "days", f"== {backup_days}")
    w.metric("rds_storage", seen["storage_gib"], "GiB", f"== {storage_gib}")
    w.metric("rds_storage_encrypted", seen["encrypted"], target="== yes")
    w.metric("rds_publicly_accessible", seen["public"], target="== no")
    w.metric("rds_port", seen["port"], target="== 5432")
    w.metric("rds_subnet_zones", len(seen["subnet_zones"]), "AZs", ">= 2")
    w.metric("rds_uses_our_security_group", seen["security_groups"] == [made.security_group_id],
             target="== yes")
    w.metric("sg_ingress_rules", len(seen["ingress"]), "rules", "== 1")
    proto, low, high, cidrs, groups = (seen["ingress"] or [("none", 0, 0, [], [])])[0]
    w.metric("sg_ingress_port", f"{proto} {low}-{high}", target="== tcp 5432-5432")
    w.metric("sg_ingress_source", ",".join(cidrs + groups), target=f"== {app_cidr}")
    w.metric("sg_source_is_app_subnet", cidrs == [seen["app_subnet_cidr"]], target="== yes")
    w.metric("password_in_request", password in request + "".join(w.evidence), target="== no")
    w.metric("aws_resources_left", left, "resources", "== 0")
    w.metric("moto_listening_after_exit", rds.port_open("127.0.0.1", urlsplit(endpoint).port or 0),
             target="== no")
    w.note("moto implements the EC2 and RDS APIs, not a database: the instance it reports has "
           "a name nothing listens on. The psql and TCP checks above ran on the real server.")
    w.note(f"The full request sequence ({len(made.calls)} calls) is in {wd / 'rds_request.json'}.")
    return w


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
