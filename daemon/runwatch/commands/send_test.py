"""``runwatch send-test CHANNEL``: one sample alert through the real channel, now, without the state.

The channel is built with the daemon's own code, so what it proves is what the daemon will do.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runwatch.commands.common import load, say
from runwatch.config import Config
from runwatch.delivery.channel import Channel, ChannelSetupError, Delivered, Outcome, Permanent, Retry
from runwatch.delivery.registry import build_channel
from runwatch.errors import DeliveryError
from runwatch.model import Alert
from runwatch.yamlfile import FileProblems, Problem

if TYPE_CHECKING:
    from runwatch.config import Config


# -- send-test ----------------------------------------------------------------------------------------
def sample_alert(channel: str, now: float) -> Alert:
    """A notification that says it is a test, shaped like a real ``run.status`` alert."""
    return Alert(
        id=f"msg_test_{secrets.token_hex(8)}",
        type="run.status",
        channel=channel,
        provider="exa",
        monitor_id="monitor_test",
        run_id="mrun_test",
        rule="send-test",
        severity="info",
        title=f"runwatch test notification to {channel}",
        body=(
            f"This is a test sent by `runwatch send-test {channel}`; no run changed.\n"
            "It looks like a real alert: exa monitor monitor_test, run mrun_test, running -> failed.\n"
            "If you can read this, the channel works."
        ),
        detected_at=now,
        occurred_at=now,
        from_status="running",
        to_status="failed",
        failed_reason="none: this is a test",
        labels={"test": "true"},
        run={"id": "mrun_test", "status": "failed", "test": True},
    )


def build_one(config: Config, name: str) -> Channel:
    """The one channel ``name``, built as the daemon builds it; RunwatchError if it is not usable."""
    channels = config.settings.channels
    if name not in channels:
        configured = ", ".join(sorted(channels)) or "none"
        raise DeliveryError(f"unknown channel {name!r}; configured channels: {configured}")
    try:
        return build_channel(name, channels[name], base_dir=config.base_dir)
    except ChannelSetupError as exc:
        loc = ["channels", name, *exc.field.split(".")]
        raise FileProblems(
            [Problem(config.shown, config.line_of(*loc), ".".join(loc), exc.message)]
        ) from None


def describe_outcome(channel: Channel, outcome: Outcome, millis: float, alert_id: str) -> str:
    """One line: channel, outcome, status, latency, and the error detail when there is one."""
    status = getattr(outcome, "status", None)
    facts = [f"status {status}"] if status is not None else []
    if isinstance(outcome, Retry | Permanent):
        facts.append(outcome.reason)
    if isinstance(outcome, Retry) and outcome.after is not None:
        facts.append(f"retry after {outcome.after:g}s")
    kind = {Delivered: "delivered", Retry: "retry", Permanent: "permanent"}[type(outcome)]
    head = f"{channel.name} ({channel.kind}): {kind} in {millis:.0f} ms"
    head += f" ({', '.join(facts)})" if facts else ""
    if isinstance(outcome, Delivered):
        return f"{head}; id {alert_id}"
    return f"{head}: {outcome.detail}"


def send_test(config_path: Path, name: str, *, out: TextIO) -> int:
    """``runwatch send-test CHANNEL``: one sample alert through the real channel, now; 0 if delivered."""
    config = load(config_path)
    channel = build_one(config, name)
    alert = sample_alert(name, time.time())
    try:
        started = time.perf_counter()
        try:
            outcome = channel.send(alert)
        except Exception as exc:  # a channel should report, not raise; if one does, say what it raised
            raise DeliveryError(f"send-test {name}: the channel raised {type(exc).__name__}: {exc}") from None
        millis = (time.perf_counter() - started) * 1000
    finally:
        channel.close()
    say(describe_outcome(channel, outcome, millis, alert.id), out)
    return 0 if isinstance(outcome, Delivered) else 1


def cmd_send_test(path: Path, channel: str) -> int:
    """``runwatch send-test CHANNEL``: exit 0 only if the channel acknowledged the sample."""
    return send_test(path, channel, out=sys.stdout)
