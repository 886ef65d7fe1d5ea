"""``runwatch demo`` and ``runwatch fake``: the pipeline and the fake providers on loopback, to see
runwatch work and to rehearse rules, with no API key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch import log as logsetup
from runwatch.redact import redact

if TYPE_CHECKING:
    pass


def cmd_fake(provider: str, listen: str, scenario_path: Path | None) -> int:
    import anyio

    from runwatch.fakes import load_scenario, run_fake

    scenario = load_scenario(scenario_path) if scenario_path else None
    logsetup.setup("info")
    try:
        anyio.run(run_fake, provider, listen, scenario)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(redact(f"runwatch fake: {exc}"), file=sys.stderr)
        return 1
    return 0


def cmd_demo(forever: bool, metrics_listen: str | None) -> int:
    """``runwatch demo``: the shipped story, end to end, on loopback."""
    from runwatch.demo import run_demo

    return run_demo(forever=forever, metrics_listen=metrics_listen)
