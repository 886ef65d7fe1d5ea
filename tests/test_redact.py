"""Secrets are masked wherever text leaves the process."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from runwatch import log, redact


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    redact.forget_all()
    yield
    redact.forget_all()


def test_registered_secret_and_url_parts_are_masked() -> None:
    redact.register("sk-live-123456")
    redact.register_url("slack://T0AAAAAAA/B0BBBBBBB/XXXXXXXXXXXXXXXXXXXXXXXX/#ops")
    text = redact.redact("key sk-live-123456 token XXXXXXXXXXXXXXXXXXXXXXXX channel #ops")
    assert "sk-live-123456" not in text and "XXXXXXXXXXXXXXXXXXXXXXXX" not in text
    assert "#ops" in text


def test_userinfo_passwords_and_bearer_tokens_masked_unregistered() -> None:
    text = redact.redact("mailto://bob:hunter2pass@smtp.example.com and Authorization: Bearer abcdef123456")
    assert "hunter2pass" not in text and "abcdef123456" not in text
    assert "mailto://bob:<secret>@smtp.example.com" in text


def test_log_lines_are_redacted_including_tracebacks() -> None:
    redact.register("topsecretkey")
    buf = io.StringIO()
    log.setup("debug", "logfmt", buf)
    logger = log.get_logger("runwatch.test")
    logger.info("thing.happened", key="topsecretkey", note="with space")
    try:
        raise ValueError("failed with topsecretkey")
    except ValueError:
        logger.exception("thing.failed")
    out = buf.getvalue()
    assert "topsecretkey" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert 'event=thing.happened key=<secret> note="with space"' in lines[0]


def test_ordinary_names_in_a_channel_url_survive() -> None:
    """Only what apprise calls private is masked: paths, hosts and words stay readable."""
    redact.register_url("json://127.0.0.1:18003/runwatch")
    redact.register_url(
        "mailto://alerts:Sup3rS3cretPw@smtp.example.com?to=oncall@example.com&from=a@example.com"
    )
    text = redact.redact(
        "event=runwatch.started path=/var/lib/runwatch/runwatch.sqlite3 rules/production.yaml "
        "channel=json://127.0.0.1:18003/runwatch password Sup3rS3cretPw"
    )
    assert "event=runwatch.started" in text
    assert "/var/lib/runwatch/runwatch.sqlite3" in text
    assert "rules/production.yaml" in text
    assert "json://127.0.0.1:18003/runwatch" in text
    assert "Sup3rS3cretPw" not in text


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general", ["TIiajkdnlazkcOXrIdevi7FQ"]),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", ["JHMHI8qBe7bk2ZwO5U711o3dV_js"]),
        ("tgram://123456789:AAHabcdefghijkLMNOP/12345", ["123456789:AAHabcdefghijkLMNOP"]),
        (
            "https://hooks.example.com/services/q8Vd2kX9LmN3pR7tW1yZ?token=abc123tok",
            ["abc123tok", "q8Vd2kX9LmN3pR7tW1yZ"],
        ),
    ],
)
def test_service_tokens_are_masked(url: str, secrets: list[str]) -> None:
    redact.register_url(url)
    text = redact.redact(f"sending via {url} failed; token {' '.join(secrets)}")
    for s in secrets:
        assert s not in text
    assert "sending via" in text and "failed" in text
