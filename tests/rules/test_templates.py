"""runwatch.rules.templates: default texts, custom templates, the sandbox and the fallback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from runwatch.model import Change, ChangeKind, RunEvent
from runwatch.rules.templates import (
    TEMPLATE_VARIABLES,
    compile_template,
    default_body,
    default_title,
    render_texts,
)

README = Path(__file__).resolve().parents[2] / "rules" / "README.md"


def status_change(**kw: Any) -> Change:
    base: dict[str, Any] = {
        "key": "k1",
        "kind": ChangeKind.RUN_STATUS,
        "provider": "exa",
        "monitor_id": "monitor_prod_news",
        "run_id": "mrun_1",
        "run": {"id": "mrun_1", "failedReason": "Quota exceeded", "metadata": {"team": "search"}},
        "from_status": "created",
        "to_status": "failed",
        "failed_reason": "Quota exceeded",
    }
    return Change(**(base | kw))


def event_change(message: str = "all done") -> Change:
    return Change(
        key="k2",
        kind=ChangeKind.RUN_EVENT,
        provider="olostep",
        monitor_id="mon_7",
        run_id="run_9",
        run={"id": "run_9"},
        event=RunEvent(id="e1", ts_ms=1, name="run_complete", message=message, raw={"url": "https://x"}),
    )


def render(
    change: Change, title: str | None = None, body: str | None = None
) -> tuple[str, str, tuple[str, ...]]:
    return render_texts(
        change,
        rule="r1",
        severity="critical",
        labels={"team": "search"},
        title=compile_template(title) if title is not None else None,
        body=compile_template(body) if body is not None else None,
    )


# --- defaults ----------------------------------------------------------------------------------------


def test_default_title_status_change() -> None:
    assert (
        default_title(status_change(), "critical")
        == "[critical] exa monitor_prod_news run mrun_1: created -> failed"
    )


def test_default_title_first_seen_run() -> None:
    change = status_change(from_status=None)
    assert default_title(change, "warning") == "[warning] exa monitor_prod_news run mrun_1: failed"


def test_default_title_event() -> None:
    assert default_title(event_change(), "info") == "[info] olostep mon_7 run run_9: event run_complete"


def test_default_body_status_change() -> None:
    assert default_body(status_change()) == "from: created\nto: failed\nfailed_reason: Quota exceeded"


def test_default_body_leaves_out_empty_fields() -> None:
    assert default_body(status_change(from_status=None, failed_reason=None)) == "to: failed"


def test_default_body_event_indents_continuation_lines() -> None:
    body = default_body(event_change(message="line one\nline two"))
    assert body == "event: run_complete\nmessage: line one\n  line two"


def test_default_body_never_empty() -> None:
    change = status_change(from_status=None, to_status=None, failed_reason=None)
    assert default_body(change) == "kind: run.status"


def test_defaults_used_without_templates() -> None:
    assert render(status_change()) == (
        "[critical] exa monitor_prod_news run mrun_1: created -> failed",
        "from: created\nto: failed\nfailed_reason: Quota exceeded",
        (),
    )


# --- custom templates --------------------------------------------------------------------------------


def test_custom_title_and_body_see_every_variable() -> None:
    title = "{{ provider }} monitor {{ monitor_id }}: run {{ run_id }} {{ to }}"
    body = (
        "{{ rule }}|{{ severity }}|{{ labels.team }}|{{ kind }}|{{ from }}|{{ failed_reason }}|"
        "{{ run.failedReason }}|{{ run.metadata.team }}"
    )
    assert render(status_change(), title, body) == (
        "exa monitor monitor_prod_news: run mrun_1 failed",
        "r1|critical|search|run.status|created|Quota exceeded|Quota exceeded|search",
        (),
    )


def test_event_variables() -> None:
    _, body, _ = render(event_change(), body="{{ event }}: {{ message }} ({{ event_data.url }}) [{{ to }}]")
    assert body == "run_complete: all done (https://x) []"


def test_title_is_one_line() -> None:
    title, _, _ = render(status_change(), title="  {{ provider }}\n\n  {{ run_id }}  \n")
    assert title == "exa mrun_1"


def test_template_rendering_to_nothing_falls_back_to_default() -> None:
    title, body, errors = render(status_change(), title="{{ event }}", body="{% if false %}x{% endif %}\n")
    assert title == "[critical] exa monitor_prod_news run mrun_1: created -> failed"
    assert body == "from: created\nto: failed\nfailed_reason: Quota exceeded"
    assert errors == ()


def test_missing_run_key_and_null_render_as_nothing() -> None:
    change = status_change(run={"failedReason": None})
    _, body, errors = render(change, body="[{{ run.failedReason }}][{{ run.nope }}]")
    assert (body, errors) == ("[][]", ())


def test_loop_variable_and_globals_are_allowed() -> None:
    _, body, _ = render(
        status_change(), body="{% for k, v in labels.items() %}{{ loop.index }}{{ k }}={{ v }}{% endfor %}"
    )
    assert body == "1team=search"
    compile_template("{{ range(3) | list }} {{ dict(a=1) }}")


# --- the sandbox and the fallback --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "refused"),
    [
        ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
        ("{{ run.__class__ }}", "access to attribute '__class__' of 'dict' object is unsafe"),
        ("{{ run['__class__'] }}", "access to attribute '__class__' of 'dict' object is unsafe"),
        ("{{ '{0.__class__}'.format(run) }}", "access to attribute '__class__' of 'dict' object is unsafe"),
        ("{{ run.metadata.update(team='x') }}", "access to attribute 'update' of 'dict' object is unsafe"),
        ("{{ lipsum.__globals__ }}", "access to attribute '__globals__' of 'function' object is unsafe"),
    ],
)
def test_sandbox_refuses_without_dropping_the_alert(template: str, refused: str) -> None:
    change = status_change()
    title, body, errors = render(change, title=template)
    note = f"(template error in rule r1: title: SecurityError: {refused})"
    assert title == "[critical] exa monitor_prod_news run mrun_1: created -> failed"
    assert body == f"from: created\nto: failed\nfailed_reason: Quota exceeded\n{note}"
    assert errors == (note,)
    assert "<class" not in title + body
    assert change.run["metadata"] == {"team": "search"}


def test_body_error_keeps_custom_title_and_falls_back_to_default_body() -> None:
    title, body, errors = render(status_change(), title="{{ run_id }} failed", body="{{ 1 / 0 }}")
    assert title == "mrun_1 failed"
    assert body.splitlines() == [
        "from: created",
        "to: failed",
        "failed_reason: Quota exceeded",
        "(template error in rule r1: body: ZeroDivisionError: division by zero)",
    ]
    assert len(errors) == 1


def test_title_error_keeps_custom_body() -> None:
    _, body, _ = render(status_change(), title="{{ run.nope.deeper + 1 }}", body="custom")
    assert (
        body
        == "custom\n(template error in rule r1: title: UndefinedError: 'dict object' has no attribute 'nope')"
    )


def test_a_key_missing_at_any_depth_renders_empty() -> None:
    """``monitor.metadata.team`` on a monitor without metadata is empty, so ``or`` gives the default."""
    title, _, errors = render(
        status_change(), title="x={{ run.nope.deeper }}|{{ monitor.metadata.team or 'none' }}", body="b"
    )
    assert (title, errors) == ("x=|none", ())


def test_both_templates_failing_give_two_notes() -> None:
    _, body, errors = render(status_change(), title="{{ 1 / 0 }}", body="{{ [] | first | int + none }}")
    assert len(errors) == 2
    assert body.splitlines()[-2:] == list(errors)
    assert errors[0].startswith("(template error in rule r1: title: ZeroDivisionError")
    assert errors[1].startswith("(template error in rule r1: body: ")


def test_long_error_is_shortened_to_one_line() -> None:
    change = status_change(run={"k": "x" * 1000})
    _, body, errors = render(change, body="{{ run[run.k].y + 1 }}")
    assert len(errors) == 1
    assert errors[0].startswith(
        "(template error in rule r1: body: UndefinedError: 'dict object' has no attribute 'xxx"
    )
    assert errors[0].endswith("…)")
    assert len(errors[0]) < 400
    assert body.endswith("\n" + errors[0])


# --- load-time checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ monitor_id }", "template syntax error: unexpected '}'"),
        (
            "{% if to %}x",
            "template syntax error: Unexpected end of template. Jinja was looking for the "
            "following tags: 'elif' or 'else' or 'endif'. "
            "The innermost block that needs to be closed is 'if'.",
        ),
        (
            "line one\n{{ x y }}\n",
            "template syntax error: expected token 'end of print statement', got 'y' (template line 2)",
        ),
        ("{{ monitr_id }}", "unknown template variable 'monitr_id' (did you mean 'monitor_id'?)"),
        (
            "{{ loop.index }}",
            "unknown template variable 'loop' (known: " + ", ".join(sorted(TEMPLATE_VARIABLES)) + ")",
        ),
    ],
)
def test_compile_errors(source: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        compile_template(source)


def test_readme_documents_every_template_variable() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Templates", 1)[1].split("###", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)`", section, flags=re.MULTILINE))
    assert documented == TEMPLATE_VARIABLES
