"""The lifecycle keys of a rule, as validated data: ``threshold``, ``flapping``, ``group_by``,
``repeat_interval``, ``send_resolved``, ``group_wait``, ``group_interval``.

They are part of a rule file's schema; what they do to an alert is :mod:`runwatch.pipeline.lifecycle`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from runwatch.durations import Duration

#: Labels a ``group_by`` may name (besides the rule's own labels).
GROUP_LABELS: tuple[str, ...] = ("provider", "monitor_id", "run_id", "kind", "event", "to")


#: ``group_wait`` when only ``group_interval`` is given, and the reverse (Alertmanager's defaults).
DEFAULT_GROUP_WAIT = 30.0


DEFAULT_GROUP_INTERVAL = 300.0


#: ``flapping.count`` when not given: more than this many alternations within ``within`` is flapping.
DEFAULT_FLAP_COUNT = 4


class Threshold(BaseModel):
    """Fire only when the rule matched ``count`` times within ``within``."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, description="Matches needed to fire.")
    within: Duration = Field(description="The window the matches must fall in (e.g. 24h).")


class Flapping(BaseModel):
    """Flap damping: a group alternating between matching and completing is reported once as flapping."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(
        DEFAULT_FLAP_COUNT,
        ge=1,
        description="Flapping once the group alternated more than this many times within `within`.",
    )
    within: Duration = Field(description="The window the alternations are counted in (e.g. 1h).")
    quiet: Duration | None = Field(
        None, description="Flapping ends after this long with no alternation (default: `within`)."
    )

    def quiet_for(self) -> float:
        return self.quiet if self.quiet is not None else self.within


class LifecycleSpec(BaseModel):
    """The rule keys that turn a rule's matches into an alert with a lifecycle (all optional)."""

    model_config = ConfigDict(extra="forbid")

    group_by: list[str] | None = Field(
        None, description="Labels that identify one alert of this rule (default: provider, monitor_id)."
    )
    threshold: Threshold | None = Field(None, description="Fire only after count matches within a window.")
    repeat_interval: Duration | None = Field(None, description="Re-send an alert still open at this pace.")
    send_resolved: StrictBool = Field(False, description="Send one resolved notification when it closes.")
    group_wait: Duration | None = Field(None, description="Collect a new group's matches this long.")
    group_interval: Duration | None = Field(None, description="Send a group's later matches at this pace.")
    flapping: Flapping | None = Field(None, description="Report a flapping group once, not as a storm.")

    def used(self) -> bool:
        return bool(
            self.group_by or self.threshold or self.repeat_interval or self.send_resolved
            or self.grouped() or self.flapping
        )  # fmt: skip

    def grouped(self) -> bool:
        """Matches are collected and sent as one notification (``group_wait``/``group_interval``)."""
        return self.group_wait is not None or self.group_interval is not None

    def wait(self) -> float:
        return self.group_wait if self.group_wait is not None else DEFAULT_GROUP_WAIT

    def interval(self) -> float:
        return self.group_interval if self.group_interval is not None else DEFAULT_GROUP_INTERVAL
