"""Forwarding through the whole daemon: a rule's change arrives as a signed v1 webhook, email keeps its
line breaks, and ``check`` names file, line and field for every channel that cannot work."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.delivery.policy import RateSpec, parse_rate
from runwatch.model import rfc3339
from runwatch.service.app import Daemon
from runwatch.service.assemble import check
from runwatch.sources.base import parse_time
from runwatch.yamlfile import FileProblems
from tests.conftest import SmtpSink, mailto_url, write_config
from tests.test_end_to_end import EXA_KEY, FAST, OLOSTEP_KEY, fakes, first_polls
from tests.webhook_server import webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "webhook-v1.json").read_text())

RULES = """
rules:
  - name: exa-run-failed
    match: {provider: exa, monitor: "monitor_prod_*", kind: run.status, to: failed}
    severity: critical
    labels: {team: search}
    notify: [tickets, ops-mail]
    body: "Reason: {{ failed_reason }}\\nRun: {{ run_id }}\\nWas: {{ from }}"
  - name: olostep-events
    match: {provider: olostep, kind: run.event, event: run_complete}
    notify: [tickets]
"""


async def test_a_change_is_forwarded_as_a_signed_v1_webhook_and_email_keeps_lines(
    tmp_path: Path, smtp: SmtpSink
) -> None:
    clock = ManualClock(time.time())
    async with fakes(clock) as (exa, olostep), webhook_server(SECRET) as rx:
        (tmp_path / "hook.secret").write_text(SECRET + "\n")
        body = f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
providers:
  exa: {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: 100ms, idle_poll_interval: 1s}}
  olostep:
    {{base_url: "{olostep.base_url}", api_key: {OLOSTEP_KEY}, poll_interval: 100ms, idle_poll_interval: 1s}}
channels:
  tickets:
    webhook: {{url: "{rx.url}", secret_file: hook.secret, headers: {{X-Team: ops}}, timeout: 5s}}
  ops-mail: {{apprise: "{mailto_url(smtp.port)}"}}
"""
        daemon = Daemon(load_config(write_config(tmp_path, body, RULES)), client_options=FAST)
        async with daemon.running():
            await first_polls(daemon)
            clock.advance(30)
            await rx.wait_for(2)
            await smtp.wait_for(1)
    by_type = {r.payload["type"]: r for r in rx.delivered() if r.payload}
    exa_req = by_type["run.status"]
    p = exa_req.payload
    assert p is not None
    jsonschema.validate(p, SCHEMA)
    assert exa_req.headers["webhook-id"] == p["id"] and exa_req.headers["x-team"] == "ops"
    assert (p["provider"], p["monitor_id"], p["run_id"]) == ("exa", "monitor_prod_news", "mrun_1")
    assert (p["from"], p["to"], p["failed_reason"]) == ("created", "failed", "Quota exceeded")
    assert (p["rule"], p["severity"], p["labels"]) == ("exa-run-failed", "critical", {"team": "search"})
    assert p["run"]["failedReason"] == "Quota exceeded" and p["run"]["id"] == "mrun_1"
    assert p["body"] == "Reason: Quota exceeded\nRun: mrun_1\nWas: created"
    # The provider's own time of the failure (the fake's clock runs ahead of the daemon's here).
    assert p["occurred_at"] == rfc3339(parse_time(p["run"]["failedAt"]))
    olo = by_type["run.event"].payload
    assert olo is not None and (olo["event"], olo["message"]) == ("run_complete", "run complete: 3 changes")
    assert olo["title"]  # a rule without title/body still forwards the full payload
    jsonschema.validate(olo, SCHEMA)
    [mail] = smtp.messages
    text = next(part for part in mail.walk() if part.get_content_type() == "text/plain")
    assert "Reason: Quota exceeded\nRun: mrun_1\nWas: created" in text.get_payload(
        decode=True
    ).decode().replace("\r\n", "\n")


def problems(tmp_path: Path, channels: str) -> list[str]:
    cfg = write_config(tmp_path, f"state_dir: state\nrule_files: []\nchannels:\n{channels}", "rules: []\n")
    try:
        check(load_config(cfg))
    except FileProblems as exc:
        return [str(p).replace(str(cfg), "runwatch.yaml") for p in exc.problems]
    return []


def test_check_names_file_line_and_field_of_each_bad_channel(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """  a:
    webhook: {url: "ftp://example.com/hook", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
  b:
    webhook:
      url: https://example.com/hook
      secret: not-a-secret
  c:
    webhook:
      url: https://example.com/hook
      secret_file: /nonexistent/secret
  d: {apprise: "mailto://user:pass@127.0.0.1:25?to=x@example.com&mode=insecure"}
  e: {rate: "fast", apprise: "json://127.0.0.1/x"}
""",
    )
    assert any(p.startswith("runwatch.yaml:5: channels.a.webhook.url: is not an http(s) URL") for p in got), (
        got
    )
    assert any(p.startswith("runwatch.yaml:9: channels.b.webhook.secret:") and "whsec_" in p for p in got), (
        got
    )
    assert any(p.startswith("runwatch.yaml:15: channels.e.rate:") for p in got), got
    assert not any("not-a-secret" in p for p in got)  # a wrong secret is still a secret


def test_a_fractional_rate_is_whole_sends_in_a_longer_window() -> None:
    """``at most 0.5 sends in a second`` cannot be kept in a window of one second: it is 1 in any 2."""
    assert parse_rate("0.5/s") == RateSpec(1, 2.0)
    assert parse_rate("2.5/m") == RateSpec(5, 120.0)
    assert parse_rate("30/m") == RateSpec(30, 60.0)
    written = ["0.5/s", "2.5/m", "30/m", "2/s"]
    assert [str(parse_rate(r)) for r in written] == written
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate("0/s")


def test_check_gives_apprise_reason_and_missing_secret_file_with_lines(tmp_path: Path) -> None:
    got = problems(
        tmp_path,
        """  c:
    webhook:
      url: https://example.com/hook
      secret_file: /nonexistent/secret
  d: {apprise: "mailto://user:pass@127.0.0.1:25?to=x@example.com&mode=insecure"}
""",
    )
    assert got == [
        "runwatch.yaml:7: channels.c.webhook.secret_file: file not found: /nonexistent/secret",
        "runwatch.yaml:8: channels.d.apprise: apprise cannot use this URL: "
        "Invalid ~From~ email specified: Apprise <user@127.0.0.1>",
    ]
