"""runwatch.rules.sandbox: what a template may cost. Refused at load where it can be, bounded at render.

Measured before the limits: a title ``{{ 'x' * 200000000 }}`` passed ``check`` after 7 s and sent a
200 MB notification; two nested ``range(100000)`` loops stalled the daemon for good. Every test here
renders for real, through the same sandbox the daemon uses; time is driven by a clock the test moves.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from runwatch.model import Change, ChangeKind
from runwatch.rules import Rule
from runwatch.rules.sandbox import Limits
from runwatch.rules.schema import RuleSpec
from runwatch.rules.templates import (
    BODY_CUT,
    BODY_LIMIT,
    TITLE_LIMIT,
    compile_template,
    default_body,
    default_title,
    render_texts,
)


def change(**kw: Any) -> Change:
    base: dict[str, Any] = {
        "key": "k1",
        "kind": ChangeKind.RUN_STATUS,
        "provider": "exa",
        "monitor_id": "monitor_prod_news",
        "run_id": "mrun_1",
        "run": {"id": "mrun_1", "items": list(range(1000)), "count": 200_000_000},
        "from_status": "running",
        "to_status": "failed",
        "failed_reason": "Quota exceeded",
    }
    return Change(**(base | kw))


DEFAULT_BODY = default_body(change())
DEFAULT_TITLE = default_title(change(), "critical")


#: The daemon's limits, but a time limit no slow test machine reaches: each test names the limit it
#: is about, and only the time test (with a clock it drives) should meet the clock.
UNHURRIED = Limits(time_limit=3600.0)


def render(
    body: str | None = None,
    title: str | None = None,
    *,
    limits: Limits = UNHURRIED,
    c: Change | None = None,
) -> tuple[str, str, tuple[str, ...]]:
    return render_texts(
        c or change(),
        rule="r1",
        severity="critical",
        labels={"team": "search"},
        title=compile_template(title, limits=limits) if title is not None else None,
        body=compile_template(body, limits=limits) if body is not None else None,
    )


def limit_note(part: str, message: str) -> str:
    return f"(template error in rule r1: {part}: TemplateLimitError: {message})"


# --- refused at load: constant work over a limit is named by ``runwatch check`` ----------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * 200000000 }}", "'*' would make 200000000 characters or items (the limit is 1000000)"),
        ("{{ 'x' * 1000 * 1000 * 1000 }}", "'*' would make 1000000000 characters or items"),
        ("{{ [0] * 10000000 }}", "'*' would make 20000000 characters or items"),
        ("{{ 2 ** 100000 }}", "'**' would make an integer of about 200000 bits (the limit is 4096)"),
        ("{{ 'ab' ~ 'x' * 999999 }}", "'~' would make 1000001 characters or items"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "range(100000) has 100000 items (the limit is 10000)",
        ),
        (
            "title\n{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
            "its loops would run 1001000 iterations or more (the limit is 100000) (template line 2)",
        ),
        (
            "{% for i in range(10000) %}{% endfor %}" * 11,
            "its loops would run 110000 iterations or more (the limit is 100000)",
        ),
        ("{{ 'x' | center(1000000000) }}", "center(1000000000) would make 1000000000 characters or items"),
        ("{{ '%999999999d' % 1 }}", "'%' formatting with width 999999999 would make 999999999 characters"),
        ("{{ [1] | batch(100000000, 'x') | list }}", "batch(100000000) with fill_with would make 100000000"),
        ("{{ range(3) | join('x' * 1000000) }}", "join() would make 2000003 characters or items"),
        ("{{ run | tojson(1000) }}", "tojson indent 1000 is over the limit of 16"),
        ("{{ run['items'] | sum(start=[]) }}", "sum() takes numbers only (start must be a number)"),
    ],
)
def test_constant_work_over_a_limit_is_refused_at_load(source: str, message: str) -> None:
    with pytest.raises(ValueError, match="^over a template limit: " + re.escape(message)):
        compile_template(source)


@pytest.mark.parametrize(
    "tag", ["include 'other'", "import 'other' as o", "from 'other' import m", "extends 'x'"]
)
def test_other_templates_are_refused_at_load(tag: str) -> None:
    with pytest.raises(ValueError, match=r"^\{% \w+.* %\} is not available: a rule template stands alone$"):
        compile_template("{% " + tag + " %}")


def test_what_depends_on_the_data_loads() -> None:
    """Only what is over a limit whatever the change is refused; a loop over data may run no turn."""
    compile_template("{% for x in run['items'] %}{% for i in range(10000) %}{% endfor %}{% endfor %}" * 9)
    compile_template("{% for x in [] %}{% else %}{% for i in range(10000) %}{% endfor %}{% endfor %}" * 9)
    with pytest.raises(ValueError, match=re.escape("center(1000000000) would make 1000000000 characters")):
        compile_template("{{ run.failedReason | center(1000000000) }}")


def test_loading_computes_nothing() -> None:
    """Jinja2 folds constants while compiling (where the 7 s went): here the big value is not built."""
    tpl = compile_template("{{ 'x' * 600000 }}{% if 'y' * 600000 %}z{% endif %}{{ 'a' ~ 'b' * 600000 }}")
    consts = tpl.template.root_render_func.__code__.co_consts  # type: ignore[attr-defined]
    assert not [c for c in consts if isinstance(c, str) and len(c) > 1000]
    _, body, errors = render(tpl.source)
    assert errors == ()
    assert body.startswith("x" * 1000)


# --- bounded at render ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * run.count }}", "'*' would make 200000000 characters or items (the limit is 1000000)"),
        (
            "{% for i in run['items'] %}{% for j in run['items'] %}{% endfor %}{% endfor %}",
            "the template ran more than 100000 loop iterations",
        ),
        (
            "{% set n = 10000 %}{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}",
            "the template ran more than 100000 loop iterations",
        ),
        ("{% set n = run.count %}{{ range(n) | list }}", "range(200000000) has 200000000 items"),
        ("{{ 'x' | center(run.count) }}", "center(200000000) would make 200000000 characters"),
        ("{{ 'x'.ljust(run.count) }}", "ljust(200000000) would make 200000000 characters"),
        (
            "{% set s = 'ab' * 500000 %}{{ s | replace('a', 'xxxxxxxxxx') }}",
            "replace() would make 5500000 characters",
        ),
        ("{{ ('ab' * 500000).replace('a', 'xxxxxxxxxx') }}", "replace() would make 5500000 characters"),
        (
            "{% set s = 'x' * 600000 %}{{ (s ~ ',').join(['a', 'b', 'c']) }}",
            "join() would make 1200005 characters",
        ),
        ("{{ 1 .to_bytes(run.count, 'big') }}", "to_bytes(200000000) would make 200000000 characters"),
        ("{{ ('\t' * 1000).expandtabs(run.count) }}", "expandtabs() would make 200000001000 characters"),
        ("{% set w = run.count %}{{ '%*d' % (w, 1) }}", "a '*' width or precision in '%' formatting"),
        ("{% set f = '{:>' ~ run.count ~ '}' %}{{ f.format(1) }}", "format() with width 200000000"),
        ("{{ '{:>{}}'.format(1, run.count) }}", "a width or precision from a nested '{}' in format()"),
        ("{{ lipsum(100000) }}", "lipsum() takes at most n=100 paragraphs of at most max=1000 words"),
        ("{% set n = 10 %}{{ n ** run.count }}", "'**' would make an integer of about 800000000 bits"),
        (
            "{% set s = 'x' * 100000 %}{% set ns = namespace(s=s) %}"
            "{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "'~' would make 1600000 characters or items (the limit is 1000000)",
        ),
        (
            # A value that repeats itself: ten of ten of ... of 10,000 characters.
            "{% set a = ['x' * 10000] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
            "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}{{ d }}",
            "a value of 1000111 characters or items (the limit is 1000000)",
        ),
        (
            "{% for i in range(10000) %}{% set x = run | tojson ~ ('x' * 1000) %}{% endfor %}",
            "the template made more than 10000000 characters or items in all",
        ),
        (
            # Literal text captured by a block never reaches the output cap: it is counted as it is made.
            "{% set n = 100 %}{% for i in range(n) %}{% set x %}{% for j in range(n) %}"
            + "literal text " * 100
            + "{% endfor %}{% endset %}{% endfor %}",
            "the template made more than 10000000 characters or items in all",
        ),
    ],
)
def test_work_over_a_limit_fails_at_render_and_the_alert_still_goes(source: str, message: str) -> None:
    title, body, errors = render(source)
    assert title == DEFAULT_TITLE
    assert len(errors) == 1
    assert errors[0].startswith(limit_note("body", message)[:-1])
    assert body == f"{DEFAULT_BODY}\n{errors[0]}"


def test_recursion_ends_at_the_call_budget() -> None:
    source = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    _, _, errors = render(source, limits=Limits(max_calls=1000, time_limit=3600.0))
    assert errors == (limit_note("body", "the template made more than 1000 calls"),)


class SteppingClock:
    """Monotonic seconds that move ``step`` every time they are read: a render that takes long."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_render_that_takes_too_long_ends_at_the_time_limit() -> None:
    clock = SteppingClock(0.01)
    limits = Limits(time_limit=0.25, clock=clock)
    _, body, errors = render("{% for i in run['items'] %}{{ i }}{% endfor %}", limits=limits)
    assert errors == (limit_note("body", "the template took longer than 0.25 s"),)
    assert body.startswith(DEFAULT_BODY)
    assert clock.now < 0.4  # it stopped right after the deadline, not at the end of the loop


def test_each_render_has_its_own_budget() -> None:
    tpl = compile_template(
        "{% for i in run['items'] %}{{ i }}{% endfor %}",
        limits=Limits(max_iterations=1500, time_limit=3600.0),
    )
    for _ in range(3):  # 1,000 iterations each: only a budget shared across renders would run out
        _, body, errors = render_texts(change(), rule="r", severity="info", labels={}, title=None, body=tpl)
        assert errors == ()
        assert body.endswith("998999")


# --- output size -------------------------------------------------------------------------------------


def test_a_long_body_is_cut_and_says_so() -> None:
    _, body, errors = render("{% for i in range(10000) %}{{ 'x' * 99 }}\n{% endfor %}")
    assert errors == ()
    assert body.endswith("\n" + BODY_CUT)
    assert len(body) <= BODY_LIMIT + 1 + len(BODY_CUT)
    assert set(body[: -len(BODY_CUT) - 1]) == {"x", "\n"}


def test_a_long_title_is_cut_to_one_line_of_the_limit() -> None:
    title, body, errors = render(title="{{ 'x' * 5000 }}\n{{ 'y' * 5000 }}")
    assert errors == ()
    assert len(title) == TITLE_LIMIT
    assert title == "x" * (TITLE_LIMIT - 1) + "…"
    assert body == DEFAULT_BODY


def test_the_default_texts_are_cut_too() -> None:
    """Provider data can be huge (a failure reason of a megabyte): the default body has the same cap."""
    huge = change(failed_reason="r" * 300_000, monitor_id="m" * 3000)
    title, body, _ = render(c=huge)
    assert len(title) == TITLE_LIMIT and title.endswith("…")
    assert body.endswith("\n" + BODY_CUT)
    assert len(body) == BODY_LIMIT + 1 + len(BODY_CUT)


def test_the_error_note_survives_the_cut() -> None:
    _, body, errors = render("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", title="{{ 1 / 0 }}")
    assert body.splitlines()[-2:] == [BODY_CUT, errors[0]]


# --- what templates can still do ----------------------------------------------------------------------


def test_ordinary_templates_are_unaffected() -> None:
    body = (
        "{{ provider }} {{ run['items'][:3] | join(',') }} {{ '%s-%05d' % (monitor_id, 3) }}"
        " {{ '{:>8}'.format(run_id) }} {% for k in run['items'][:3] %}{{ loop.index }}/{{ loop.length }}"
        " {% endfor %}{{ labels.items() | list }} {{ [1, 2] | tojson }} {{ 'a' ~ 'b' ~ 3 }}"
        " {% set a, b = 1, 2 %}{{ a + b }} {{ dict(x=1).x }} {% set ns = namespace(n=0) %}"
        "{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ 2 ** 10 }}"
        " {{ 'x' * 3 }} {{ [1] * 2 }} {{ 'ab' | center(6) }}| {{ '  y' | indent(2) }}"
    )
    _, text, errors = render(body)
    assert errors == ()
    assert text == (
        "exa 0,1,2 monitor_prod_news-00003   mrun_1 1/3 2/3 3/3 [('team', 'search')] [1, 2] ab3"
        " 3 1 10 1024 xxx [1, 1]   ab  |   y"
    )


def test_recursive_loops_and_autoescape_keep_their_meaning() -> None:
    c = change(run={"tree": [{"n": "a", "kids": [{"n": "b", "kids": []}]}]})
    _, body, errors = render(
        "{% for x in run.tree recursive %}{{ x.n }}({{ loop(x.kids) }}){% endfor %}"
        "{% autoescape true %} {{ '<b>' ~ 'x' }}{% endautoescape %}",
        c=c,
    )
    assert errors == ()
    assert body == "a(b()) &lt;b&gt;x"


# --- a failing template is logged once per rule, not per notification --------------------------------


def rule(**spec: Any) -> Rule:
    return Rule.from_spec(
        RuleSpec.model_validate({"name": "noisy", "notify": "ops", **spec}), source="r.yaml:3"
    )


def test_a_failing_template_is_logged_once_per_rule_and_part(log_lines: io.StringIO) -> None:
    noisy = rule(title="{{ 1 / 0 }}", body="{{ 'x' * run.count }}")
    decisions = [noisy.decide(change(run_id=f"mrun_{i}", key=f"k{i}")) for i in range(50)]
    assert all(len(d.template_errors) == 2 for d in decisions)
    logged = [line for line in log_lines.getvalue().splitlines() if "event=template.failed" in line]
    assert len(logged) == 2
    assert "part=title" in logged[0] and "ZeroDivisionError" in logged[0] and "source=r.yaml:3" in logged[0]
    assert "part=body" in logged[1] and "TemplateLimitError" in logged[1]
    reloaded = rule(title="{{ 1 / 0 }}")  # a reload builds the rules anew: logged once more
    reloaded.decide(change())
    assert log_lines.getvalue().count("event=template.failed") == 3
