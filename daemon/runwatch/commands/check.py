"""``runwatch check``: the config and every rule file, validated with the daemon's own code; one
summary line, or one ``file:line: field: problem`` line per problem, then the warnings.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.commands import journal
from runwatch.commands.common import print_problems
from runwatch.commands.stand_ins import stand_ins
from runwatch.commands.warnings import config_warnings
from runwatch.config import load_config
from runwatch.redact import redact
from runwatch.service.assemble import check, state_location
from runwatch.store import describe
from runwatch.yamlfile import FileProblems, Problem

if TYPE_CHECKING:
    pass


def cmd_check(path: Path) -> int:
    try:
        config = load_config(path)
        warnings: list[Problem] = []
        ruleset, channels = check(config, stand_ins(config, warnings))
    except FileProblems as exc:
        print_problems(exc)
        return 1
    for channel in channels.values():
        channel.close()
    state = describe(state_location(config))  # a database that cannot be used: one line, exit 1
    warnings.extend(config_warnings(config, ruleset))
    for warning in warnings:  # on stderr, so that stdout stays the one summary line
        journal.say(redact(f"warning: {warning}"), journal.WARNING, sys.stderr)
    enabled = sorted(config.enabled_providers())
    journal.say(
        redact(
            f"OK: {path}: {len(ruleset)} rules in {len(ruleset.files)} files, {len(channels)} channels, "
            f"providers enabled: {', '.join(enabled) or 'none (no API key set)'}"
            + (f", state: {state}" if state else "")
        ),
        journal.INFO,
        sys.stdout,
    )
    return 0
