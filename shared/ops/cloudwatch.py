"""The same checkpoint figures as CloudWatch custom metrics, for services that live on AWS.

    with cloudwatch_server() as endpoint:        # moto's CloudWatch on 127.0.0.1
        client = cloudwatch_client(endpoint)
        sent = publish_window(client, stats, {"Backend": "sqlite"})
        got = read_back(client, sent, {"Backend": "sqlite"}, since=start)
    trip = round_trip(stats, {"Backend": "sqlite"})  # the same, server included

``publish_window`` sends one ``put_metric_data`` call; ``read_back`` asks
``get_metric_statistics`` for each metric, so a test sees the figures arrive over HTTP.
Against real AWS pass ``endpoint_url=None`` and the usual credentials to
``cloudwatch_client``; CloudWatch then takes a minute or two to show a new datapoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.ops.window import WindowStats

NAMESPACE = "LangGraph/Checkpoints"
REGION = "us-east-1"
# moto accepts any credentials; these are placeholders, not secrets.
_MOTO_KEY_ID, _MOTO_SECRET = "moto-local", "moto-local-secret"


@contextmanager
def cloudwatch_server() -> Iterator[str]:
    """moto's CloudWatch API on a free loopback port for the block; yields its URL."""
    from moto.server import ThreadedMotoServer

    access_log = logging.getLogger("werkzeug")  # one line per request otherwise
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        wsgi = getattr(server, "_server", None)  # stop() leaves the listening socket open
        if wsgi is not None:
            wsgi.server_close()


def cloudwatch_client(endpoint_url: str | None, region: str = REGION) -> Any:
    """A boto3 CloudWatch client that gives up in seconds, not minutes, when unreachable."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=1.0, read_timeout=10.0,
                    retries={"max_attempts": 2, "mode": "standard"})
    creds = ({"aws_access_key_id": _MOTO_KEY_ID, "aws_secret_access_key": _MOTO_SECRET}
             if endpoint_url else {})
    return boto3.client("cloudwatch", endpoint_url=endpoint_url, region_name=region,
                        config=config, **creds)


def window_figures(stats: WindowStats) -> dict[str, tuple[float, str]]:
    """The window as CloudWatch metrics: name -> (value, CloudWatch unit)."""
    figures = {"WritesPerSecond": (stats.writes_per_s, "Count/Second"),
               "WriteErrorRate": (stats.error_rate * 100, "Percent"),
               "DatabaseBytes": (stats.db_bytes, "Bytes")}
    if stats.p99_ms is not None:
        figures["WriteLatencyP99"] = (stats.p99_ms, "Milliseconds")
    if stats.p50_ms is not None:
        figures["WriteLatencyP50"] = (stats.p50_ms, "Milliseconds")
    return figures


def publish_window(client: Any, stats: WindowStats, dimensions: dict[str, str],
                   namespace: str = NAMESPACE, at: datetime | None = None) -> dict[str, float]:
    """One ``put_metric_data`` call with the window's figures; returns what was sent."""
    at = at or datetime.now(UTC)
    dims = [{"Name": k, "Value": v} for k, v in dimensions.items()]
    figures = window_figures(stats)
    client.put_metric_data(Namespace=namespace, MetricData=[
        {"MetricName": name, "Dimensions": dims, "Timestamp": at, "Value": value, "Unit": unit}
        for name, (value, unit) in figures.items()])
    return {name: value for name, (value, _) in figures.items()}


def read_back(client: Any, names: dict[str, float] | list[str], dimensions: dict[str, str],
              since: datetime, namespace: str = NAMESPACE) -> dict[str, float | None]:
    """The latest ``Maximum`` CloudWatch holds for each metric since ``since`` (None: none)."""
    dims = [{"Name": k, "Value": v} for k, v in dimensions.items()]
    out: dict[str, float | None] = {}
    start, end = since - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1)
    for name in names:
        points = client.get_metric_statistics(
            Namespace=namespace, MetricName=name, Dimensions=dims, StartTime=start,
            EndTime=end, Period=60, Statistics=["Maximum"])["Datapoints"]
        latest = max(points, key=lambda p: p["Timestamp"], default=None)
        out[name] = None if latest is None else float(latest["Maximum"])
    return out


@dataclass
class RoundTrip:
    endpoint: str
    sent: dict[str, float]
    read: dict[str, float | None]


def round_trip(stats: WindowStats, dimensions: dict[str, str]) -> RoundTrip:
    """Publish ``stats`` to an embedded CloudWatch and read every figure back."""
    since = datetime.now(UTC)
    with cloudwatch_server() as endpoint:
        client = cloudwatch_client(endpoint)
        sent = publish_window(client, stats, dimensions)
        return RoundTrip(endpoint, sent, read_back(client, sent, dimensions, since))
