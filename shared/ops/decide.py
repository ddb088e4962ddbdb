"""Alerts and the migrate-or-not decision, from one thresholds config.

The seed's matrix, evaluated over a sliding window of live metrics (``WindowStats``):

| rule | condition | verdict |
|---|---|---|
| multi_server | more than one server writes the database (declared) | MIGRATE NOW |
| error_rate | failed writes / attempts above ``error_rate_migrate`` | MIGRATE NOW |
| writes_per_s | writes/s over the whole window above ``writes_per_s_migrate`` | MIGRATE NOW |
| file_size | database file above ``file_bytes_soon`` | MIGRATE SOON |
| (none) | | SQLITE SUFFICIENT |

With fewer than ``min_attempts`` write attempts in the window the traffic rules cannot be
judged, and a sustained rate cannot be judged before the window spans (90 % of) its length:
the verdict is NOT ENOUGH DATA (unless a rule that needs no traffic fires), never a false
"sufficient" or a false alarm. A rule the source cannot observe at all (the error rate of a
bare database file, the size when no ``ckpt_database_bytes`` is exported) is shown as not
observed, with why, and does not hold the verdict back. Every decision can be logged as one
JSON line with its inputs, the matrix and the justification.

    ckpt render                          # rewrite deploy/ rules and dashboard from config
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import ROOT
from shared.errors import CheckpointError
from shared.ops.window import MetricsWindow, WindowStats

CONFIG = ROOT / "config" / "thresholds.toml"

MIGRATE_NOW, MIGRATE_SOON = "MIGRATE NOW", "MIGRATE SOON"
SUFFICIENT, NO_DATA = "SQLITE SUFFICIENT", "NOT ENOUGH DATA"


@dataclass(frozen=True)
class Thresholds:
    alert_window: str = "1m"
    alert_error_rate: float = 0.01
    alert_writes_per_s: float = 80.0
    window_s: float = 5.0
    writes_per_s_migrate: float = 100.0
    error_rate_migrate: float = 0.01
    file_bytes_soon: float = 5e9
    min_attempts: int = 20
    servers: int = 1
    # PostgreSQL health (shared/ops/pg_health.py, `ckpt health`) and its alert rules
    pg_rtt_p99_ms: float = 5.0
    pg_connections_used: float = 0.80
    pg_dead_ratio: float = 0.20
    pg_dead_tuples_min: int = 10_000
    pg_cache_hit_min: float = 0.90
    pg_cache_min_blocks: int = 10_000
    pg_latency_p99_ms: float = 5.0
    pg_pool_waiting_for: str = "5m"
    pg_retries_per_s: float = 0.5
    # the Redis hot tier (shared/savers/hybrid.py)
    hot_errors_per_s: float = 0.1

    def with_(self, **changes: Any) -> Thresholds:
        """A copy with some thresholds changed (checked like the file)."""
        return _checked(replace(self, **changes), "overrides")


_FILE_KEYS = {  # (section, key in the file) -> field
    ("alerts", "window"): "alert_window", ("alerts", "error_rate_above"): "alert_error_rate",
    ("alerts", "writes_per_s_above"): "alert_writes_per_s",
    ("decision", "window_s"): "window_s",
    ("decision", "writes_per_s_migrate"): "writes_per_s_migrate",
    ("decision", "error_rate_migrate"): "error_rate_migrate",
    ("decision", "file_bytes_soon"): "file_bytes_soon",
    ("decision", "min_attempts"): "min_attempts", ("decision", "servers"): "servers",
    ("postgres", "rtt_p99_ms_above"): "pg_rtt_p99_ms",
    ("postgres", "connections_used_above"): "pg_connections_used",
    ("postgres", "dead_ratio_above"): "pg_dead_ratio",
    ("postgres", "dead_tuples_at_least"): "pg_dead_tuples_min",
    ("postgres", "cache_hit_below"): "pg_cache_hit_min",
    ("postgres", "cache_min_blocks"): "pg_cache_min_blocks",
    ("postgres", "latency_p99_ms_above"): "pg_latency_p99_ms",
    ("postgres", "pool_waiting_for"): "pg_pool_waiting_for",
    ("postgres", "retries_per_s_above"): "pg_retries_per_s",
    ("redis", "errors_per_s_above"): "hot_errors_per_s",
}
_DURATIONS = ("alert_window", "pg_pool_waiting_for")  # Prometheus ranges, not numbers
_WHOLE = ("min_attempts", "servers", "pg_dead_tuples_min", "pg_cache_min_blocks")
_FRACTIONS = ("alert_error_rate", "error_rate_migrate", "pg_connections_used", "pg_dead_ratio",
              "pg_cache_hit_min")


def _checked(th: Thresholds, where: str) -> Thresholds:
    for f in fields(th):
        value = getattr(th, f.name)
        if f.name in _DURATIONS:
            if not (isinstance(value, str) and value[:-1].isdigit() and value[-1] in "smh"):
                what = "alert window" if f.name == "alert_window" else f.name
                raise CheckpointError(f"{where}: {what} {value!r} must be a Prometheus "
                                      "range such as 30s, 1m or 1h.")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CheckpointError(f"{where}: {f.name} = {value!r} must be a number.")
        if not math.isfinite(value):
            raise CheckpointError(f"{where}: {f.name} = {value!r} must be a finite number.")
        if f.name in _WHOLE and value != int(value):
            raise CheckpointError(f"{where}: {f.name} = {value!r} must be a whole number.")
        if value < 0 or (f.name in ("window_s", "servers") and value <= 0):
            raise CheckpointError(f"{where}: {f.name} = {value!r} must be positive.")
        if f.name in _FRACTIONS and value > 1:
            of = " of attempts" if "error_rate" in f.name else ""
            raise CheckpointError(f"{where}: {f.name} = {value!r} is a fraction{of}: "
                                  "write 0.01 for 1 %.")
    return th


def load_thresholds(path: Path | None = None) -> Thresholds:
    """Read the TOML config; one clear sentence for a missing file, bad TOML or bad value."""
    path = path or CONFIG
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"Threshold config {path} does not exist: give the path of a "
                              f"TOML file like {CONFIG}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise CheckpointError(f"Threshold config {path} is not valid TOML ({exc}): fix the "
                              "line it names.") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, binary bytes
        raise CheckpointError(f"Threshold config {path} cannot be read as text ({exc}): give "
                              f"the path of a TOML file like {CONFIG}.") from exc
    values: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise CheckpointError(f"{path}: {section!r} must be a [section].")
        for key, value in table.items():
            name = _FILE_KEYS.get((section, key))
            if name is None:
                known = ", ".join(f"{s}.{k}" for s, k in _FILE_KEYS)
                raise CheckpointError(f"{path}: unknown setting {section}.{key}: the settings "
                                      f"are {known}.")
            values[name] = value
    return _checked(Thresholds(**values), str(path))


def write_thresholds(th: Thresholds, path: Path) -> Path:
    """Write ``th`` as a config file that ``load_thresholds`` reads back equal."""
    names = {name: key for key, name in _FILE_KEYS.items()}
    lines = ["# Written by shared.ops.decide.write_thresholds."]
    for section in dict.fromkeys(section for section, _ in _FILE_KEYS):
        lines.append(f"\n[{section}]")
        for f in fields(th):
            if names[f.name][0] == section:
                lines.append(f"{names[f.name][1]} = {json.dumps(getattr(th, f.name))}")
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# --- alerts and the decision ---------------------------------------------------------------

def evaluate_alerts(stats: WindowStats, th: Thresholds) -> dict[str, bool]:
    """The same two alerts as the Prometheus rules, on a window in this process."""
    return {"CheckpointWriteErrorRateHigh": stats.error_rate > th.alert_error_rate,
            "CheckpointWritesHigh": stats.writes_per_s > th.alert_writes_per_s}


@dataclass
class Decision:
    verdict: str
    fired: list[str]
    justification: str
    inputs: dict[str, Any]
    at: float = field(default_factory=time.time)
    matrix: list[dict[str, Any]] = field(default_factory=list)  # every rule, as ``Rule``

    def to_dict(self) -> dict[str, Any]:
        """``at`` as ISO 8601 UTC, ``at_unix`` as seconds: what one log line holds."""
        data = asdict(self)
        return {"at": datetime.fromtimestamp(self.at, UTC).isoformat(),
                "at_unix": data.pop("at"), **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)


@dataclass
class Rule:
    name: str
    verdict: str
    threshold: str
    current: str
    fired: bool | None  # None: cannot be judged from this window
    observable: bool = True  # False: this source never shows it
    note: str = ""  # why it is not observed


FILE_SIZE_NOT_EXPORTED = ("no ckpt_database_bytes in these metrics: give CheckpointMetrics "
                          "a size_of to judge the file size")


def rules(stats: WindowStats, th: Thresholds,
          unobservable: Mapping[str, str] | None = None) -> list[Rule]:
    """The decision matrix with current values.

    ``unobservable`` maps a rule name to why this source cannot show it (a database file
    records no failed writes): such a rule is reported, not judged.
    """
    attempts = stats.writes + stats.errors
    judged = attempts >= th.min_attempts
    full = stats.span_s >= th.window_s * 0.9  # "sustained" needs the window, not a blip
    matrix = [
        Rule("multi_server", MIGRATE_NOW, "> 1 server", f"{th.servers} declared",
             th.servers > 1),
        Rule("error_rate", MIGRATE_NOW, f"> {th.error_rate_migrate:.1%}",
             f"{stats.error_rate:.2%} of {attempts:.0f} attempts",
             stats.error_rate > th.error_rate_migrate if judged else None),
        Rule("writes_per_s", MIGRATE_NOW, f"> {th.writes_per_s_migrate:g}/s over "
             f"{th.window_s:g} s", f"{stats.writes_per_s:.1f}/s over {stats.span_s:.1f} s",
             stats.writes_per_s > th.writes_per_s_migrate if judged and full else None),
        Rule("file_size", MIGRATE_SOON, f"> {th.file_bytes_soon:,.0f} bytes",
             f"{stats.db_bytes:,.0f} bytes", stats.db_bytes > th.file_bytes_soon),
    ]
    missing = dict(unobservable or {})
    if stats.db_bytes <= 0:  # a SQLite file is never empty once set up: the gauge is absent
        missing.setdefault("file_size", FILE_SIZE_NOT_EXPORTED)
    for rule in matrix:
        if rule.name in missing:
            rule.fired, rule.observable = None, False
            rule.current, rule.note = "not observed", missing[rule.name]
    return matrix


def decide(stats: WindowStats, th: Thresholds,
           unobservable: Mapping[str, str] | None = None) -> Decision:
    """The verdict over one window, with the matrix, the inputs and a justification."""
    matrix = rules(stats, th, unobservable)
    fired = [r for r in matrix if r.fired]
    if any(r.verdict == MIGRATE_NOW for r in fired):
        verdict = MIGRATE_NOW
    elif fired:
        verdict = MIGRATE_SOON
    elif any(r.fired is None and r.observable for r in matrix):
        verdict = NO_DATA
    else:
        verdict = SUFFICIENT
    attempts = stats.writes + stats.errors
    if fired:
        why = "; ".join(f"{r.name}: {r.current} ({r.threshold})" for r in fired)
    elif verdict == NO_DATA:
        gaps = []
        if attempts < th.min_attempts:
            gaps.append(f"only {attempts:.0f} write attempts in the last {stats.span_s:.1f} s "
                        f"(need {th.min_attempts})")
        if stats.span_s < th.window_s * 0.9:
            gaps.append(f"the window covers {stats.span_s:.1f} s of the {th.window_s:g} s a "
                        "sustained rate needs")
        why = " and ".join(gaps) + ": no traffic rule can be judged yet"
    else:
        why = "no rule fired: " + "; ".join(f"{r.name} {r.current}" for r in matrix
                                             if r.observable)
    unseen = [r for r in matrix if not r.observable]
    if unseen:
        why += ". " + "; ".join(f"{r.name} not observed: {r.note}" for r in unseen)
    return Decision(verdict, [r.name for r in fired], why,
                    {"stats": stats.to_dict(), "thresholds": asdict(th)},
                    matrix=[asdict(r) for r in matrix])


class DecisionEngine:
    """Samples a ``MetricsWindow`` and decides; each decision is one JSON line in ``log``."""

    def __init__(self, window: MetricsWindow, th: Thresholds, log: Path | None = None) -> None:
        self.window, self.th, self.log = window, th, log
        self.decisions: list[Decision] = []

    def step(self) -> Decision:
        self.window.sample()
        decision = decide(self.window.stats(), self.th)
        self.decisions.append(decision)
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(decision.to_json() + "\n")
        return decision

    def watch(self, until: Callable[[Decision], bool], timeout_s: float,
              period_s: float = 0.25) -> Decision | None:
        """Decide every ``period_s`` until ``until(decision)`` holds; None on timeout."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            decision = self.step()
            if until(decision):
                return decision
            time.sleep(period_s)
        return None
