"""What an alert keeps of a provider's values: bounded, with a marker wherever something was cut."""

from __future__ import annotations

import re
from typing import Any

import orjson

from runwatch.model import CUT_KEY, RUN_LIMIT, VALUE_LIMIT, Change, ChangeKind, RunEvent, bounded, cut_text
from runwatch.pipeline.grouping import change_from_data, change_to_data


def size(value: Any) -> int:
    return len(orjson.dumps(value).decode())


def assert_cut(kept: str, original: str, limit: int = VALUE_LIMIT) -> None:
    """``kept`` is the start of ``original`` and a marker counting the rest, ``limit`` at the most."""
    found = re.fullmatch(r"(.*)…\[cut: (\d+) more characters\]", kept, re.DOTALL)
    assert found is not None and len(kept) <= limit and len(kept) >= limit - 40
    assert original.startswith(found[1]) and len(found[1]) + int(found[2]) == len(original)


def test_a_small_run_is_kept_as_it_is() -> None:
    run = {"id": "mrun_1", "status": "failed", "metadata": {"team": "search"}, "items": [1, 2.5, None, True]}
    assert bounded(run) == run


def test_a_long_string_keeps_its_start_and_says_how_much_was_cut() -> None:
    text = "x" * (VALUE_LIMIT + 1234)
    assert_cut(cut_text(text), text)
    assert cut_text(cut_text(text)) == cut_text(text)  # a second cut changes nothing
    out = bounded({"failedReason": text, "snapshot": {"text": text}, "id": "run_1"})
    assert out["failedReason"] == cut_text(text)
    # Inside an object, a string shares the object's budget.
    kept = out["snapshot"]["text"]
    assert_cut(kept, text, VALUE_LIMIT - 20)
    assert VALUE_LIMIT - 100 <= size(out["snapshot"]) <= VALUE_LIMIT + 40
    assert out["id"] == "run_1"
    assert bounded(out) == out  # bounding what was bounded changes nothing


def test_a_large_object_keeps_what_fits_in_order_and_does_not_crowd_out_the_fields_after_it() -> None:
    run = {
        "id": "run_1",
        "snapshot": {f"field_{i:05d}": f"value {i}" for i in range(20000)},
        "status": "failed",
        "failedReason": "Quota exceeded",
    }
    out = bounded(run)
    assert (out["id"], out["status"], out["failedReason"]) == ("run_1", "failed", "Quota exceeded")
    snapshot = out["snapshot"]
    kept = [k for k in snapshot if k != CUT_KEY]
    assert kept == [f"field_{i:05d}" for i in range(len(kept))] and len(kept) > 100
    assert snapshot[CUT_KEY] == f"[cut: {20000 - len(kept)} more keys]"
    assert VALUE_LIMIT - 100 <= size(snapshot) <= VALUE_LIMIT + 100  # about one value's budget
    assert bounded(out) == out


def test_the_whole_run_is_bounded_too() -> None:
    run = {f"page_{i}": "y" * 10000 for i in range(50)}
    out = bounded(run)
    assert size(out) <= RUN_LIMIT + 100
    assert out["page_0"] == cut_text("y" * 10000)
    kept = [k for k in out if k != CUT_KEY]
    assert kept == [f"page_{i}" for i in range(len(kept))]
    assert out[CUT_KEY] == f"[cut: {50 - len(kept)} more keys]"
    assert bounded(out) == out


def test_a_long_list_ends_with_an_item_saying_how_many_were_left_out() -> None:
    out = bounded({"id": "run_1", "pages": list(range(100000))})
    pages = out["pages"]
    assert pages[: len(pages) - 1] == list(range(len(pages) - 1))
    assert pages[-1] == f"…[cut: {100000 - len(pages) + 1} more items]"
    assert size(out) <= RUN_LIMIT + 100
    assert bounded(out) == out


def test_nesting_deeper_than_the_limit_is_cut_not_a_recursion_error() -> None:
    deep: Any = "bottom"
    for _ in range(500):
        deep = {"a": [deep]}
    out = bounded({"id": "run_1", "deep": deep})
    assert out["id"] == "run_1" and "nested too deep" in orjson.dumps(out).decode()
    assert bounded(out) == out


def test_payload_items_and_kept_groups_hold_the_bounded_run_and_templates_the_whole_one() -> None:
    """What is stored or sent is bounded; a template renders once, into a bounded body, from the run
    as the provider returned it (a group renders from what it kept)."""
    text = "z" * 50000
    change = Change(
        key="olostep:run_1:event:e1",
        kind=ChangeKind.RUN_EVENT,
        provider="olostep",
        monitor_id="monitor_1",
        run_id="run_1",
        run={"run_id": "run_1", "snapshot": {"text": text}, "log_group": "/olostep/monitors/monitor_1"},
        event=RunEvent("e1", 1, "node_start", "m" * 5000, raw={"id": "e1", "message": "m" * 5000}),
    )
    kept = bounded(change.run)
    assert kept["log_group"] == "/olostep/monitors/monitor_1" and len(kept["snapshot"]["text"]) < VALUE_LIMIT
    item = change.payload_item()
    assert item["run"] == kept and item["message"] == cut_text("m" * 5000)
    data = change_to_data(change)
    assert size(data) < 4 * VALUE_LIMIT
    again = change_from_data(data)
    assert again.template_vars()["run"] == kept and bounded(again.run) == kept  # bounding again: the same
    assert change.template_vars()["run"]["snapshot"]["text"] == text
