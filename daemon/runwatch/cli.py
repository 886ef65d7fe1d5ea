"""Command line: ``runwatch run | check | demo | fake | init``.

``check`` and ``run`` load the config and rules with the same code, so a file ``check`` accepts is one
the daemon runs. Every message goes through the redactor before it is printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import anyio

from runwatch import __version__
from runwatch import log as logsetup
from runwatch.config import Config, load_config
from runwatch.redact import redact
from runwatch.yamlfile import FileProblems


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runwatch",
        description="Watch Exa Websets and Olostep monitor runs; alert through apprise on what rules select.",
    )
    p.add_argument("--version", action="version", version=f"runwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT (SIGHUP reloads rule files)")
    run.add_argument("--config", "-c", type=Path, required=True, help="the YAML config file")

    chk = sub.add_parser("check", help="validate the config and every rule file; exit 1 listing each problem")
    chk.add_argument("--config", "-c", type=Path, required=True, help="the YAML config file")

    demo = sub.add_parser("demo", help="the whole pipeline against local fake APIs, no key, no network")
    demo.add_argument(
        "--forever", action="store_true", help="keep running after the story ends (Ctrl-C stops)"
    )
    demo.add_argument(
        "--metrics-listen",
        default=None,
        help="where to serve /metrics (default 127.0.0.1:9464, or a free port when that one is taken;"
        " port 0 picks a free one)",
    )

    init = sub.add_parser(
        "init",
        help="write a starter config and rules (and, on request, the systemd unit, Grafana dashboard,"
        " Prometheus alert rules)",
    )
    init.add_argument("--dir", type=Path, help="write runwatch.yaml and rules/starter.yaml here")
    init.add_argument("--systemd", type=Path, metavar="DIR", help="write runwatch.service here")
    init.add_argument("--grafana", type=Path, metavar="DIR", help="write runwatch-dashboard.json here")
    init.add_argument(
        "--prometheus", type=Path, metavar="DIR", help="write runwatch-alerts.yaml (and its tests) here"
    )
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    fake = sub.add_parser("fake", help="serve a fake provider API on loopback, to rehearse rules")
    fake.add_argument("provider", choices=["exa", "olostep"])
    fake.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    fake.add_argument("--scenario", type=Path, help="a scenario YAML file (default: the demo story)")
    return p


def _print_problems(exc: FileProblems, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    for problem in exc.problems:
        print(redact(str(problem)), file=out)


def _load(path: Path) -> Config:
    return load_config(path)


def cmd_check(path: Path) -> int:
    from runwatch.app import check

    try:
        config = _load(path)
        ruleset, channels = check(config)
    except FileProblems as exc:
        _print_problems(exc)
        return 1
    enabled = sorted(config.enabled_providers())
    print(
        f"OK: {path}: {len(ruleset)} rules in {len(ruleset.files)} files, "
        f"{len(channels)} channels, providers enabled: {', '.join(enabled) or 'none (no API key set)'}"
    )
    return 0


def cmd_run(path: Path) -> int:
    from runwatch.app import Daemon

    try:
        config = _load(path)
    except FileProblems as exc:
        _print_problems(exc, sys.stderr)
        return 1
    logsetup.setup(config.settings.log_level, config.settings.log_format)
    try:
        daemon = Daemon(config)
    except FileProblems as exc:
        _print_problems(exc, sys.stderr)
        return 1
    except OSError as exc:
        print(redact(f"runwatch: {exc}"), file=sys.stderr)
        return 1
    try:
        anyio.run(daemon.serve_until_signalled)
    except OSError as exc:
        print(redact(f"runwatch: {exc}"), file=sys.stderr)
        return 1
    return 0


def cmd_fake(provider: str, listen: str, scenario_path: Path | None) -> int:
    from runwatch.fakes import load_scenario, run_fake

    try:
        scenario = load_scenario(scenario_path) if scenario_path else None
    except FileProblems as exc:
        _print_problems(exc, sys.stderr)
        return 1
    logsetup.setup("info")
    try:
        anyio.run(run_fake, provider, listen, scenario)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"runwatch fake: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from runwatch import starter

    targets = {b: getattr(args, "dir" if b == "config" else b) for b in starter.BUNDLES}
    targets = {b: d for b, d in targets.items() if d is not None} or {"config": Path(".")}
    try:
        written = starter.write(targets, force=args.force)
    except starter.TargetExists as exc:
        print(f"runwatch init: already there: {exc}; nothing written (--force overwrites)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"runwatch init: {exc}", file=sys.stderr)
        return 1
    print("\n".join(starter.describe(written)))
    if "config" in targets:
        print(f"next: runwatch check --config {targets['config'] / 'runwatch.yaml'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(args.config)
    if args.command == "run":
        return cmd_run(args.config)
    if args.command == "fake":
        return cmd_fake(args.provider, args.listen, args.scenario)
    if args.command == "init":
        return cmd_init(args)
    if args.command == "demo":
        from runwatch.demo import run_demo

        return run_demo(forever=args.forever, metrics_listen=args.metrics_listen)
    raise AssertionError(args.command)
