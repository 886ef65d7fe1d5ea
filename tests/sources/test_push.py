"""What a push is allowed to say: Exa signatures checked on the raw bytes (vectors), envelopes and
Olostep bodies read into "read this monitor (run) now", and the push settings and their secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from runwatch.config import load_config
from runwatch.redact import redact
from runwatch.sources.push import BadBody, Push, parse_exa, parse_olostep, parse_signature, verify_exa
from runwatch.yamlfile import FileProblems

SECRET = "whsec_5ecret-ÄÖ"
NOW = 1_780_000_000
BODY = (
    b'{"id":"evt_1","object":"event","type":"monitor.run.completed",'
    b'"data":{"id":"mrun_1","monitorId":"monitor_a"},"createdAt":"2026-05-28T20:26:40.000Z"}'
)
#: ``printf '1780000000.<BODY>' | openssl dgst -sha256 -hmac 'whsec_5ecret-ÄÖ'``: computed outside
#: Python, so the key is the secret's UTF-8 bytes and the message ``"<t>.<raw body>"``, as Exa documents.
VECTOR = "b544a8b3d722a58160d2d9f162b46ac56fae02b269dcbee4eb72a7acfbefd516"


def sign(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_the_documented_vector_verifies() -> None:
    assert verify_exa(f"t={NOW},v1={VECTOR}", BODY, [SECRET], NOW) == "ok"


@pytest.mark.parametrize(
    ("header", "body", "secrets", "now", "verdict"),
    [
        pytest.param(f"t={NOW},v1={'0' * 64},v1={VECTOR}", BODY, [SECRET], NOW, "ok", id="two-v1-one-valid"),
        pytest.param(f"t={NOW}, v1={VECTOR.upper()}", BODY, [SECRET], NOW, "ok", id="spaces-and-upper-hex"),
        pytest.param(f"t={NOW},v1={VECTOR}", BODY, [SECRET], NOW + 301, "stale", id="stale-t"),
        pytest.param(f"t={NOW},v1={VECTOR}", BODY, [SECRET], NOW - 301, "stale", id="future-t"),
        pytest.param(f"t={NOW},v1={VECTOR}", BODY, [SECRET], NOW + 300, "ok", id="300s-is-still-fresh"),
        pytest.param(
            f"t={NOW},v1={VECTOR}",
            BODY.replace(b"mrun_1", b"mrun_2"),
            [SECRET],
            NOW,
            "bad_signature",
            id="tampered-body",
        ),
        pytest.param(f"t={NOW},v1={VECTOR}", BODY, ["whsec_other"], NOW, "bad_signature", id="wrong-secret"),
        pytest.param(f"t={NOW + 1},v1={VECTOR}", BODY, [SECRET], NOW, "bad_signature", id="t-not-signed"),
        pytest.param(None, BODY, [SECRET], NOW, "bad_signature", id="missing-header"),
        pytest.param("", BODY, [SECRET], NOW, "bad_signature", id="empty-header"),
        pytest.param(f"v1={VECTOR}", BODY, [SECRET], NOW, "bad_signature", id="no-t"),
        pytest.param(f"t={NOW}", BODY, [SECRET], NOW, "bad_signature", id="no-v1"),
        pytest.param(f"t=soon,v1={VECTOR}", BODY, [SECRET], NOW, "bad_signature", id="t-not-a-number"),
        pytest.param(f"t={NOW},v0={VECTOR}", BODY, [SECRET], NOW, "bad_signature", id="other-scheme-only"),
        pytest.param(f"t={NOW};v1={VECTOR}", BODY, [SECRET], NOW, "bad_signature", id="malformed"),
        pytest.param(f"t={NOW},v1={VECTOR}", BODY, [], NOW, "bad_signature", id="no-secret-configured"),
        pytest.param(
            f"t={NOW},v1={VECTOR}" + ",v1=ab" * 20, BODY, [SECRET], NOW, "bad_signature", id="too-many-v1"
        ),
    ],
)
def test_signature_vectors(
    header: str | None, body: bytes, secrets: list[str], now: int, verdict: str
) -> None:
    assert verify_exa(header, body, secrets, now) == verdict


def test_rotation_accepts_either_secret_and_a_header_signed_with_both() -> None:
    old, new = "whsec_old_1234", "whsec_new_5678"
    by_old, by_new = sign(old, NOW, BODY), sign(new, NOW, BODY)
    assert verify_exa(f"t={NOW},v1={by_old}", BODY, [new, old], NOW) == "ok"
    assert verify_exa(f"t={NOW},v1={by_new}", BODY, [new, old], NOW) == "ok"
    assert verify_exa(f"t={NOW},v1={by_new},v1={by_old}", BODY, [new], NOW) == "ok"
    assert verify_exa(f"t={NOW},v1={by_old}", BODY, [new], NOW) == "bad_signature"  # the old one retired


def test_a_replayed_signature_is_stale_once_its_window_passed() -> None:
    header = f"t={NOW},v1={VECTOR}"
    assert verify_exa(header, BODY, [SECRET], NOW + 10) == "ok"  # Exa's own retry: same id, dedupe later
    assert verify_exa(header, BODY, [SECRET], NOW + 3600) == "stale"


def test_parse_signature_bounds() -> None:
    assert parse_signature(f"t={NOW},v1=ab,v1=cd") == (NOW, ["ab", "cd"])
    assert parse_signature("t=1," + "v1=ab," * 2000 + "v1=cd") is None  # over the header bound


def envelope(**over: object) -> bytes:
    obj = {"id": "evt_9", "object": "event", "type": "monitor.run.created",
           "data": {"id": "mrun_9", "monitorId": "monitor_b", "status": "created"},
           "createdAt": "2026-05-28T20:26:40.000Z"}  # fmt: skip
    obj.update(over)
    return json.dumps(obj).encode()


def test_exa_envelopes_name_the_run_to_read() -> None:
    assert parse_exa(envelope()) == (
        "monitor.run.created",
        Push("exa", "evt_9", "run.created", "monitor_b", "mrun_9"),
    )
    _, push = parse_exa(envelope(type="monitor.run.completed"))
    assert push is not None and push.kind == "run.completed"
    assert parse_exa(envelope(type="monitor.updated", data={"id": "monitor_b"})) == ("monitor.updated", None)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        envelope(id=""),
        envelope(type=None),
        envelope(object="webset"),
        envelope(data="mrun_9"),
        envelope(data={"id": "mrun_9"}),  # a run event must say its monitor
    ],
)
def test_what_is_not_an_exa_envelope_is_a_bad_body(body: bytes) -> None:
    with pytest.raises(BadBody) as err:
        parse_exa(body)
    assert err.value.status == 400


@pytest.mark.parametrize(
    "obj",
    [
        {"monitor_id": "monitor_x", "run_id": "run_1", "status": "completed"},
        {"monitorId": "monitor_x"},
        {"monitor": {"id": "monitor_x"}},
        {"data": {"monitor_id": "monitor_x"}},
    ],
)
def test_olostep_bodies_name_their_monitor_under_any_documented_key(obj: dict[str, object]) -> None:
    push = parse_olostep(json.dumps(obj).encode())
    assert (push.provider, push.monitor_id, push.run_id) == ("olostep", "monitor_x", "")


def test_olostep_repeats_share_an_id_and_other_bodies_do_not() -> None:
    a = json.dumps({"monitor_id": "monitor_x", "run_id": "run_1"}).encode()
    b = json.dumps({"monitor_id": "monitor_x", "run_id": "run_2"}).encode()
    assert parse_olostep(a).event_id == parse_olostep(a).event_id != parse_olostep(b).event_id


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{}", 422),
        (b'{"monitor_id": 7}', 422),
        (b'{"monitor_id": "../../etc"}', 422),
        (b"nope", 400),
        (b'"monitor_x"', 400),
    ],
)
def test_olostep_bodies_without_a_monitor(body: bytes, status: int) -> None:
    with pytest.raises(BadBody) as err:
        parse_olostep(body)
    assert err.value.status == status


# -- settings ---------------------------------------------------------------------------------------------
def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runwatch.yaml"
    path.write_text("rule_files: []\n" + text)
    return path


def test_push_keys_from_the_file(tmp_path: Path) -> None:
    token = "t" * 40
    cfg = load_config(config(tmp_path, f"""
ingest_listen: 127.0.0.1:9465
providers:
  exa: {{webhook_secret: [whsec_new_key_1, whsec_old_key_2]}}
  olostep: {{webhook_token: {token}, live_logs: false, max_streams: 7}}
"""))  # fmt: skip
    exa, olostep = cfg.settings.providers.exa, cfg.settings.providers.olostep
    assert [s.get_secret_value() for s in exa.webhook_secret] == ["whsec_new_key_1", "whsec_old_key_2"]
    assert olostep.webhook_token.get_secret_value() == token
    assert (olostep.live_logs, olostep.max_streams) == (False, 7)
    assert cfg.settings.ingest_listen == "127.0.0.1:9465"
    assert redact(f"a {token} b whsec_old_key_2") == "a <secret> b <secret>"


def test_push_defaults_are_no_push(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, ""))
    assert cfg.settings.ingest_listen is None
    assert cfg.settings.providers.exa.webhook_secret == []
    assert cfg.settings.providers.olostep.webhook_token is None
    assert (cfg.settings.providers.olostep.live_logs, cfg.settings.providers.olostep.max_streams) == (
        True,
        50,
    )


def test_push_secrets_from_the_environment_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "olostep_webhook_token").write_text("c" * 32 + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("EXA_WEBHOOK_SECRET", "whsec_env_one whsec_env_two")
    cfg = load_config(config(tmp_path, ""))
    exa, olostep = cfg.settings.providers.exa, cfg.settings.providers.olostep
    assert [s.get_secret_value() for s in exa.webhook_secret] == ["whsec_env_one", "whsec_env_two"]
    assert olostep.webhook_token.get_secret_value() == "c" * 32
    assert "<secret>" in redact("whsec_env_two " + "c" * 32)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("providers:\n  olostep: {webhook_token: short-token}\n", ":3: providers.olostep.webhook_token"),
        (
            "providers:\n  olostep: {webhook_token: " + "a/" * 20 + "}\n",
            ":3: providers.olostep.webhook_token",
        ),
        ("providers:\n  exa: {webhook_secret: ['']}\n", ":3: providers.exa.webhook_secret"),
        ("metrics_listen: 127.0.0.1:9500\ningest_listen: 127.0.0.1:9500\n", ":3: ingest_listen"),
        ("ingest_listen: nowhere\n", ":2: ingest_listen"),
        ("ingest_trusted_proxies: [not-an-ip]\n", ":2: ingest_trusted_proxies"),
    ],
)
def test_bad_push_keys_are_problems_naming_their_line(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(FileProblems) as err:
        load_config(config(tmp_path, text))
    lines = [str(p) for p in err.value.problems]
    assert any(where in line for line in lines), lines
    assert not any("short-token" in line for line in lines)  # a secret is never echoed


def test_a_short_token_from_the_environment_is_a_problem_that_does_not_show_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLOSTEP_WEBHOOK_TOKEN", "tooShort42")
    with pytest.raises(FileProblems) as err:
        load_config(config(tmp_path, ""))
    [problem] = err.value.problems
    assert "OLOSTEP_WEBHOOK_TOKEN" in str(problem) and "tooShort42" not in str(problem)
