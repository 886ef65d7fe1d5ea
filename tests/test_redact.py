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
