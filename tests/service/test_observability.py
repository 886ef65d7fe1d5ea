"""/metrics, the Grafana dashboard and the alert rules against the real tools: ``promtool`` and a real
Prometheus (Debian's ``prometheus`` package) scraping a real ``runwatch demo --forever`` every second.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import runwatch
from tests.tools import REPO, RUNWATCH, free_port, require, running, wait_for

DASHBOARD = REPO / "grafana" / "runwatch-dashboard.json"
ALERTS = REPO / "prometheus" / "runwatch-alerts.yaml"
#: What Grafana puts in for its variables when the dashboard shows "All" over the last few minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m", "$instance": ".*"}


@dataclass
class Lines:
    """A subprocess's output, read on a thread; ``wait`` returns when a line matches (an event)."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Lines:
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait(self, pattern: str, timeout: float) -> str:
        with self._changed:
            ok = self._changed.wait_for(
                lambda: any(re.search(pattern, x) for x in self.lines) or self.proc.poll() is not None,
                timeout,
            )
            hit = next((x for x in self.lines if re.search(pattern, x)), None)
        if not ok or hit is None:
            pytest.fail(f"no line matching {pattern!r} within {timeout} s:\n{''.join(self.lines)[-3000:]}")
        return hit


@dataclass
class Stack:
    metrics_url: str
    prometheus_url: str
    demo: Lines

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    demo_port, prom_port = free_port(), free_port()
    (tmp / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": "runwatch", "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}]}
                ],
            }
        )
    )
    prom_args = [
        prometheus,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--log.level=warn",
    ]
    demo_args = [*RUNWATCH, "demo", "--forever", "--metrics-listen", f"127.0.0.1:{demo_port}"]
    with running(prom_args) as prom, running(demo_args) as demo_proc:
        prom_url = f"http://127.0.0.1:{prom_port}"

        def prometheus_ready() -> bool:
            try:
                return "Ready" in http_get(f"{prom_url}/-/ready")
            except OSError:
                return False

        wait_for("Prometheus ready", prometheus_ready, 30, prom)
        demo = Lines(demo_proc).start()
        yield Stack(f"http://127.0.0.1:{demo_port}/metrics", prom_url, demo)


@pytest.fixture(scope="module")
def story_scraped(stack: Stack) -> Stack:
    """The demo's story has played out, and Prometheus has scraped it since."""
    stack.demo.wait("--forever: still running", 60)
    done = time.time()

    def scraped_after_story() -> bool:
        data = stack.api("query", query="timestamp(runwatch_build_info)")
        return bool(data["result"]) and float(data["result"][0]["value"][1]) > done + 1

    wait_for("a scrape after the story", scraped_after_story, 20)
    return stack


def test_metrics_pass_promtool_check_metrics_silently(stack: Stack) -> None:
    stack.demo.wait("metrics:", 30)
    text = http_get(stack.metrics_url)
    out = subprocess.run(
        [require("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert "_created" not in text
    assert 'runwatch_build_info{python="' in text and f'version="{runwatch.__version__}"' in text


def test_known_series_exist_at_zero_from_the_start(stack: Stack) -> None:
    stack.demo.wait("metrics:", 30)
    text = http_get(stack.metrics_url)
    for provider in ("exa", "olostep"):
        for reason in ("auth", "timeout", "http_503", "bad_json"):
            assert f'runwatch_poll_errors_total{{provider="{provider}",reason="{reason}"}} 0.0' in text
    for channel in ("ops-slack", "ops-mail"):
        assert f'runwatch_notifications_dead_total{{channel="{channel}"}} 0.0' in text
        for outcome in ("retry", "permanent", "expired"):
            assert f'runwatch_delivery_attempts_total{{channel="{channel}",outcome="{outcome}"}} 0.0' in text
    assert 'runwatch_config_reloads_total{outcome="failure"} 0.0' in text
    for provider in ("exa", "olostep"):  # the demo is one instance: it polls both
        assert f'runwatch_leader{{provider="{provider}"}} 1.0' in text
    assert "runwatch_config_mismatch 0.0" in text
    assert "runwatch_state_up 1.0" in text
    for reason in ("unavailable", "fenced", "other"):
        assert f'runwatch_state_errors_total{{reason="{reason}"}} 0.0' in text
    assert 'runwatch_rule_matches_total{rule="exa-run-failed"}' in text
    for provider in ("exa", "olostep"):  # the demo has push on
        assert f'runwatch_ingest_requests_total{{outcome="bad_signature",provider="{provider}"}} 0.0' in text
    assert 'runwatch_live_stream_drops_total{provider="olostep",reason="heartbeat"} 0.0' in text


def test_no_label_carries_an_id(stack: Stack) -> None:
    stack.demo.wait("metrics:", 30)  # the first test of its worker may come before the listener
    text = http_get(stack.metrics_url)
    assert not re.search(r'="(mrun|run|monitor)_[^"]*"', text), "a run or monitor id in a label"


def dashboard_queries() -> list[tuple[str, str, bool]]:
    """(panel title, PromQL with Grafana's variables filled in, instant?) for every panel target."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know: {expr}"
            out.append((panel["title"], expr, bool(target.get("instant"))))
    return out


def test_dashboard_imports_as_is() -> None:
    """A datasource variable, no hard-coded datasource uid, ids unique, every panel with a query."""
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())) - {dash["uid"]}
    assert uids == {"${datasource}"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in dash["panels"] if p["type"] != "row"]
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in graphs)
    titles = " ".join(p["title"].lower() for p in graphs)
    for topic in (
        "poll",
        "errors by reason",
        "runs",
        "changes",
        "rule",
        "deliver",
        "latency",
        "outbox",
        "dead",
        "leader",
        "polling each provider",
        "state reachable",
        "push requests",
        "push to read",
        "live-log streams",
    ):
        assert topic in titles


def test_every_dashboard_query_returns_data_from_a_real_prometheus(story_scraped: Stack) -> None:
    stack = story_scraped
    assert stack.api("label/instance/values", **{"match[]": "runwatch_build_info"})
    empty = []
    now = time.time()
    for title, expr, instant in dashboard_queries():
        if instant:
            data = stack.api("query", query=expr, time=str(now))
        else:
            data = stack.api("query_range", query=expr, start=str(now - 30), end=str(now), step="1")
        if not data["result"]:
            empty.append(f"{title}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_alert_rules_evaluate_cleanly_and_stay_quiet_on_a_healthy_demo(story_scraped: Stack) -> None:
    groups = story_scraped.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 8
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    firing = [a for a in story_scraped.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = require("promtool")
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool, "test", "rules", "runwatch-alerts.test.yaml"],
        capture_output=True,
        text=True,
        cwd=ALERTS.parent,
        timeout=60,
    )
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def test_alert_rules_cover_what_the_issue_asks() -> None:
    text = ALERTS.read_text()
    for name in (
        "RunwatchNotPolling",
        "RunwatchProviderFailing",
        "RunwatchDeliveriesFailing",
        "RunwatchDeadLetters",
        "RunwatchNotReady",
        "RunwatchReloadFailed",
        "RunwatchNoPoller",
        "RunwatchTwoPollers",
        "RunwatchStateUnreachable",
        "RunwatchPushBadSignatures",
        "RunwatchLiveStreamsFailing",
    ):
        assert f"alert: {name}" in text
    removed = ("runwatch_notifications_failed_total", "runwatch_notifications_pending")
    assert not any(m in text or m in DASHBOARD.read_text() for m in removed)
