"""A rule's ``match:`` block, compiled once at load time into one cheap predicate.

The daemon asks every rule about every change, so globs become one anchored regex per key, value
lists become frozensets, and the checks run cheapest first.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runwatch.model import Change
from runwatch.rules.schema import MatchSpec


def compile_globs(globs: Sequence[str]) -> re.Pattern[str]:
    """fnmatch globs (case-sensitive, ``*`` also crosses ``/``) -> one regex to ``.match()``."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


class _Missing:
    pass


_MISSING = _Missing()


def lookup(root: Any, path: Sequence[str]) -> Any:
    """Follow a dotted path into the raw run; list items by index (``steps.0.name``, ``steps.-1``)."""
    node = root
    for part in path:
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str | bytes):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        else:
            return _MISSING
    return node


def as_text(value: Any) -> str | None:
    """The string a ``fields`` regex is searched in, as the value reads in the API's JSON.

    ``str()`` for strings and numbers; ``true``/``false`` for booleans (what the user sees in the
    JSON, not Python's ``True``); JSON for objects and lists; None (no match) for a missing or null value.
    """
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True, slots=True)
class Matcher:
    """Compiled ``match:``; ``None`` means the key was absent and matches anything."""

    kinds: frozenset[str] | None = None
    providers: frozenset[str] | None = None
    monitor: re.Pattern[str] | None = None
    from_statuses: frozenset[str] | None = None
    to_statuses: frozenset[str] | None = None
    event: re.Pattern[str] | None = None
    failed_reason: re.Pattern[str] | None = None
    message: re.Pattern[str] | None = None
    fields: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = ()

    @classmethod
    def from_spec(cls, spec: MatchSpec) -> Matcher:
        return cls(
            kinds=frozenset(spec.kind) if spec.kind is not None else None,
            providers=frozenset(spec.provider) if spec.provider is not None else None,
            monitor=compile_globs(spec.monitor) if spec.monitor is not None else None,
            from_statuses=frozenset(spec.from_) if spec.from_ is not None else None,
            to_statuses=frozenset(spec.to) if spec.to is not None else None,
            event=compile_globs(spec.event) if spec.event is not None else None,
            failed_reason=re.compile(spec.failed_reason) if spec.failed_reason is not None else None,
            message=re.compile(spec.message) if spec.message is not None else None,
            fields=tuple(
                (tuple(path.split(".")), re.compile(rx)) for path, rx in (spec.fields or {}).items()
            ),
        )

    def __call__(self, change: Change) -> bool:
        if self.kinds is not None and change.kind not in self.kinds:
            return False
        if self.providers is not None and change.provider not in self.providers:
            return False
        if self.monitor is not None and not self.monitor.match(change.monitor_id):
            return False
        if self.to_statuses is not None and change.to_status not in self.to_statuses:
            return False
        # A run first seen has no previous status: a rule that names ``from`` does not fire for it.
        if self.from_statuses is not None and change.from_status not in self.from_statuses:
            return False
        event = change.event
        if self.event is not None and (event is None or not self.event.match(event.name)):
            return False
        if self.message is not None and (
            event is None or not event.message or not self.message.search(event.message)
        ):
            return False
        if self.failed_reason is not None and (
            not change.failed_reason or not self.failed_reason.search(change.failed_reason)
        ):
            return False
        for path, rx in self.fields:
            text = as_text(lookup(change.run, path))
            if text is None or not rx.search(text):
                return False
        return True
