"""docs/monitoring/ ships working: ``promtool`` loads the rules and passes their unit tests,
and every metric the rules and the Grafana dashboard name is one a real serve's ``/metrics``
exports (the serve app in-process on the in-process simulator)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette

from marketspine._serve.service import ServeService

# Each starts a real serve process (serve_support.serve_process).
pytestmark = pytest.mark.process

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES = MONITORING / "marketspine-rules.yml"
RULE_TESTS = MONITORING / "marketspine-rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# Our metric names and recording-rule names (level:metric:operation) both start so; an
# alert name (MarketspineX) or a label value never does.
_NAME = re.compile(r"(?<![A-Za-z0-9_:])marketspine[_:][A-Za-z0-9_:]*")
# The samples each metric type adds to its family's name in the text format.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("MARKETSPINE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} and MARKETSPINE_REQUIRE_SERVICES=1 requires it")
        pytest.skip(message)
    return found


def _run(*args: str) -> None:
    done = subprocess.run(args, cwd=MONITORING, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_loads_the_rules() -> None:
    _run(_promtool(), "check", "rules", RULES.name)


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    _run(_promtool(), "test", "rules", RULE_TESTS.name)


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    assert len(exprs) >= len(panels) > 10
    return exprs


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) >= 10
    for rule in alerts:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        assert "for" in rule, rule["alert"]


def test_the_seeds_thresholds_are_the_alerts() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _rules() if "alert" in rule}
    assert "< 0.95" in exprs["MarketspineUpstreamSuccessLow"]
    assert "< 0.80" in exprs["MarketspineCacheHitRateLow"]
    assert "> 15" in exprs["MarketspineWarmupSlow"]


@pytest.fixture
async def service(sim_app: Starlette, tmp_path: Path) -> AsyncIterator[ServeService]:
    async with in_process_serve(sim_app, tmp_path / "serve.db") as svc:
        yield svc


async def _exported(service: ServeService) -> set[str]:
    """Every sample name serve's ``/metrics`` exports, after some traffic (a labelled
    metric nobody touched yet exports its type line only: its names count too)."""
    async with service_client(service) as http:
        await service.warmup()
        for path, params in (
            ("/v1/ticker", {"markets": "KRW-BTC"}),
            ("/v1/candles/minutes/1", {"market": "KRW-BTC", "count": "5"}),
            ("/v1/candles/minutes/1", {"market": "KRW-BTC", "count": "5"}),
        ):
            assert (await http.get(path, params=params)).status_code == 200
        response = await http.get("/metrics")
    assert response.status_code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_the_rules_and_dashboard_name_is_exported(
    service: ServeService,
) -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    used: dict[str, str] = {}  # name -> where it is used first
    for rule in rules:
        for name in _NAME.findall(rule["expr"]):
            used.setdefault(name, f"rule {rule.get('alert') or rule.get('record')}")
    for expr in _dashboard_exprs():
        for name in _NAME.findall(expr):
            used.setdefault(name, f"dashboard: {expr}")
    assert recorded <= set(used), "a recording rule nothing uses"
    exported = await _exported(service)
    unknown = {
        name: where for name, where in used.items() if name not in exported and name not in recorded
    }
    assert not unknown, f"not exported by /metrics: {unknown}"
    # The figures the issue asks the rules to watch are among them.
    for name in (
        "marketspine_upstream_requests_total",
        "marketspine_cache_requests_total",
        "marketspine_warmup_duration_seconds",
        "marketspine_warmups_total",
        "marketspine_upstream_rate_limited_total",
        "marketspine_upstream_banned_total",
        "marketspine_upstream_circuit_open",
        "marketspine_live_frame_age_seconds",
        "marketspine_websocket_dropped_clients_total",
        "marketspine_memory_used_bytes",
        "marketspine_memory_limit_bytes",
    ):
        assert name in used, name


async def test_metrics_report_hits_warmup_breaker_and_memory(service: ServeService) -> None:
    async with service_client(service) as http:
        await service.warmup()
        params = {"market": "KRW-BTC", "count": "5", "to": "2024-01-01T00:00:00"}
        for _ in range(2):  # closed candles: fetched once, then a hit
            assert (await http.get("/v1/candles/minutes/1", params=params)).status_code == 200
        text = (await http.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("marketspine_cache_requests_total", (("result", "miss"),))] == 1
    assert samples[("marketspine_cache_requests_total", (("result", "hit"),))] == 1
    assert samples[("marketspine_warmups_total", (("result", "success"),))] == 1
    assert samples[("marketspine_warmup_last_success_timestamp_seconds", ())] > 0
    assert samples[("marketspine_upstream_circuit_open", ())] == 0
    used, limit = (
        samples[(name, ())]
        for name in ("marketspine_memory_used_bytes", "marketspine_memory_limit_bytes")
    )
    assert 0 < used < limit
