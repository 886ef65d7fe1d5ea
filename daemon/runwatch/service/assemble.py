"""Build the daemon's parts from a config (channels, their policies, the rules) and validate them the
one way: ``runwatch check``, the start of ``run`` and every reload come here, so what ``check`` accepts
is what the daemon runs.
"""

from __future__ import annotations

from collections.abc import Callable

from runwatch.config import Config
from runwatch.credentials import read_credential
from runwatch.delivery import Channel
from runwatch.delivery.channel import ChannelSetupError
from runwatch.delivery.policy import ChannelPolicy
from runwatch.delivery.registry import build_channel
from runwatch.rules import RuleSet, load_rules
from runwatch.store import Location
from runwatch.yamlfile import FileProblems, Problem


def build_channels(
    config: Config, credentials: Callable[[str], str | None] = read_credential
) -> dict[str, Channel]:
    """Every configured channel, or FileProblems naming file, line and field of each that cannot work."""
    out: dict[str, Channel] = {}
    problems: list[Problem] = []
    for name, block in config.settings.channels.items():
        try:
            out[name] = build_channel(name, block, base_dir=config.base_dir, credentials=credentials)
        except ChannelSetupError as exc:
            loc = ["channels", name, *exc.field.split(".")]
            problems.append(Problem(config.shown, config.line_of(*loc), ".".join(loc), exc.message))
    if problems:
        for ch in out.values():
            ch.close()
        raise FileProblems(problems)
    return out


def channel_policies(config: Config) -> dict[str, ChannelPolicy]:
    d = config.settings.delivery
    return {name: d.policy(block) for name, block in config.settings.channels.items()}


def load_ruleset(config: Config) -> RuleSet:
    """The rules of every file ``rule_files`` names; FileProblems lists every problem in every file.

    A glob that matches no file is one of them (``check``, the start of ``run`` and a reload all come
    here): a typo there would otherwise run the daemon with no rules, silently alerting on nothing.
    """
    problems: list[Problem] = []
    paths = config.rule_paths(problems)
    try:
        ruleset = load_rules(paths, channels=set(config.settings.channels), display_root=config.base_dir)
    except FileProblems as exc:
        problems.extend(exc.problems)
    if problems:
        raise FileProblems(problems)
    return ruleset


def check(
    config: Config, credentials: Callable[[str], str | None] = read_credential
) -> tuple[RuleSet, dict[str, Channel]]:
    """Everything ``runwatch check`` validates, with the daemon's own code; raises FileProblems.

    What works but would never alert (no provider key, a placeholder key, no rule) is not checked here:
    ``runwatch check`` adds those warnings (:mod:`runwatch.commands.warnings`). The daemon does not ask:
    at start it logs each of these in its own words (``provider.off``, ``provider.auth_failed``,
    ``rules=0``), and an error about its state must stay one line. ``credentials`` reads the channels'
    credentials (``check`` on the host passes stand-ins: :mod:`runwatch.commands.stand_ins`).
    """
    problems: list[Problem] = []
    channels: dict[str, Channel] = {}
    ruleset: RuleSet | None = None
    try:
        channels = build_channels(config, credentials)
    except FileProblems as exc:
        problems.extend(exc.problems)
    try:
        ruleset = load_ruleset(config)
    except FileProblems as exc:
        problems.extend(exc.problems)
    if problems or ruleset is None:
        for ch in channels.values():
            ch.close()
        raise FileProblems(problems)
    return ruleset, channels


def state_location(config: Config) -> Location:
    """Where the config keeps the state: SQLite in ``state_dir``, or PostgreSQL at ``state.url``."""
    return Location(config.state_dir, config.state_url, config.state_password, config.settings.instance)
