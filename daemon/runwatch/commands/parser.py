"""Command line: ``runwatch run | check | test-rules | outbox | silence | status | state | send-test | demo |
fake | init | hooks``.

``check`` and ``run`` load the config and rules with the same code, so a file ``check`` accepts is one
the daemon runs. The operator's commands (``outbox ...``, ``send-test``) live in
:mod:`runwatch.commands.outbox` and take the same ``--config`` as ``run``.

One error path: any :class:`~runwatch.errors.RunwatchError` a command raises (a config problem, a state
that is locked, corrupt or too new, a channel that cannot be built) ends here as its message on stderr
and exit status 1, never a traceback. Every message goes through the redactor before it is printed, and
gets its syslog priority when it goes to the journal (:mod:`runwatch.commands.journal`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch import __version__
from runwatch.commands import journal
from runwatch.errors import ConfigError, RunwatchError
from runwatch.redact import redact

# Everything heavier (pydantic, the config, the sources, the store, anyio) is imported where it is
# used: ``runwatch run`` starts answering /healthz (runwatch.httpserver.early_health) before it loads.
if TYPE_CHECKING:
    from runwatch.httpserver import EarlyHealth

#: Exit status when a command was given wrong arguments (argparse's own).
USAGE = 2


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, required=True, help="the YAML config file (as for run)")


def _duration(text: str) -> float:
    from runwatch.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _reload_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rl = sub.add_parser(
        "reload", help="make the running daemon re-read its config and rule files (as SIGHUP does)"
    )
    rl.add_argument(
        "--timeout",
        type=_duration,
        default=30.0,
        metavar="DURATION",
        help="how long to wait for the daemon's answer (default 30s)",
    )
    _config_arg(rl)


def _silence_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    silence = sub.add_parser(
        "silence",
        help="add, list or expire silences (works while the daemon runs)",
        description="Silences hold back matching notifications when they are due; kept in the state.",
    )
    actions = silence.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="silence matching notifications for a while; prints the new id")
    add.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="LABEL=GLOB",
        help="e.g. provider=exa, monitor_id=monitor_prod_*, rule=..., channel=... (all must match)",
    )
    add.add_argument("--for", dest="duration", type=_duration, required=True, help="how long, e.g. 2h")
    add.add_argument("--comment", default="", help="why (shown by silence list)")
    add.add_argument("--created-by", default=None, help="who (default: the current user)")
    _config_arg(add)
    ls = actions.add_parser("list", help="every silence, from the config and added here, active or not")
    ls.add_argument("--json", action="store_true", help="a JSON array instead of lines")
    _config_arg(ls)
    ex = actions.add_parser("expire", help="end a silence now")
    ex.add_argument("id", help="the silence id (sil_..., as silence add printed it)")
    _config_arg(ex)


def _state_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    state = sub.add_parser(
        "state",
        help="copy the SQLite state to PostgreSQL (runwatch must not run on it meanwhile)",
        description="The state itself. copy: the SQLite state of the config's state_dir into an empty"
        " PostgreSQL database, whole (runs, monitors, open alerts, the outbox with its ids and states,"
        " silences), so a daemon started there repeats nothing and loses nothing.",
    )
    actions = state.add_subparsers(dest="action", required=True, metavar="ACTION")
    cp = actions.add_parser("copy", help="copy the state of state_dir into an empty PostgreSQL database")
    cp.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="postgresql://user@host:5432/database (it must hold no state)",
    )
    _config_arg(cp)


def _outbox_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from runwatch.store.interfaces import FINISHED_STATES, OUTBOX_STATES

    outbox = sub.add_parser(
        "outbox",
        help="list, replay or purge notifications in the state (works while the daemon runs)",
        description="The notification log in the state. Every action works beside a running daemon.",
    )
    actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="one line per notification, newest first (--json for scripts)")
    ls.add_argument("--state", choices=OUTBOX_STATES, help="only notifications in this state")
    ls.add_argument("--channel", help="only notifications for this channel")
    ls.add_argument("--json", action="store_true", help="a JSON array of objects instead of a table")
    ls.add_argument(
        "--limit",
        type=_count,
        metavar="N",
        help="at most N, newest first (default: 100 for the table, all with --json; 0 = all)",
    )
    _config_arg(ls)

    rp = actions.add_parser(
        "replay", help="put notifications back to pending (same id); a running daemon sends them in seconds"
    )
    rp.add_argument("ids", nargs="*", metavar="ID", help="notification ids (msg_..., as outbox list shows)")
    rp.add_argument("--dead", action="store_true", help="every dead notification instead of given ids")
    rp.add_argument("--channel", help="only notifications for this channel")
    _config_arg(rp)

    pg = actions.add_parser("purge", help="delete finished (sent, dead, silenced) notifications, long done")
    pg.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="finished before now minus this (e.g. 30d, 12h)",
    )
    pg.add_argument(
        "--state", choices=FINISHED_STATES, help="only this state (default: sent, dead and silenced)"
    )
    _config_arg(pg)


def _hooks_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hooks = sub.add_parser(
        "hooks",
        help="register runwatch's push URL with a provider, or list the provider's webhooks",
        description="Push: the provider posts to runwatch's ingest_listen (README, 'Push').",
    )
    actions = hooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    setup = actions.add_parser(
        "setup", help="make the provider's webhook for runwatch; keeps the secret it returns once"
    )
    setup.add_argument("provider", choices=["exa"], help="the provider (exa has a webhook API)")
    setup.add_argument(
        "--url", required=True, help="the public URL of runwatch's hook, e.g. https://host/hooks/exa"
    )
    setup.add_argument(
        "--secret-file",
        type=Path,
        metavar="PATH",
        help="write the signing secret to this new file (mode 0600; never over a file that exists);"
        " without it the secret is printed, once",
    )
    _config_arg(setup)
    ls = actions.add_parser("list", help="the provider's webhooks (never their secrets)")
    ls.add_argument("provider", choices=["exa"])
    _config_arg(ls)


def _parser() -> argparse.ArgumentParser:
    from runwatch.sources.registry import PROVIDERS

    p = argparse.ArgumentParser(
        prog="runwatch",
        description="Watch Exa Websets and Olostep monitor runs; alert through apprise on what rules select.",
    )
    p.add_argument("--version", action="version", version=f"runwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the daemon until SIGTERM/SIGINT (SIGHUP reloads the config and rule files)"
    )
    _config_arg(run)

    chk = sub.add_parser("check", help="validate the config and every rule file; exit 1 listing each problem")
    _config_arg(chk)

    tr = sub.add_parser(
        "test-rules",
        help="run rule files against test cases offline; exit 1 with a diff when a case fails",
        description="Feed each case's timeline of changes to the rules (the daemon's own matcher,"
        " templates and alert lifecycle) and compare the notifications with the ones the case expects."
        " Offline: no network, no state, no config. Format: rules/README.md, 'Testing rules'.",
    )
    tr.add_argument("rule_files", nargs="+", type=Path, metavar="RULE_FILE", help="rule files, in order")
    tr.add_argument(
        "--cases",
        action="append",
        required=True,
        type=Path,
        metavar="CASES.yaml",
        help="a case file (repeat for several)",
    )

    _outbox_parser(sub)
    _silence_parser(sub)
    _state_parser(sub)
    _reload_parser(sub)
    _hooks_parser(sub)

    status = sub.add_parser(
        "status",
        help="instances, who polls which provider, the outbox, open alerts, silences (works while it runs)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    _config_arg(status)

    st = sub.add_parser(
        "send-test", help="send a sample notification through one channel now and print the outcome"
    )
    st.add_argument("channel", metavar="CHANNEL", help="a channel name from the config")
    _config_arg(st)

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
    fake.add_argument("provider", choices=list(PROVIDERS))
    fake.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    fake.add_argument("--scenario", type=Path, help="a scenario YAML file (default: the demo story)")
    return p


def _commands(args: argparse.Namespace) -> dict[str, Callable[[], int]]:
    """Each command's function in its family's module, imported only when that command runs: ``run``
    answers /healthz before the heavy imports, and ``--help`` or a usage error stays quick."""

    def call(module: str, func: str, arguments: Callable[[], tuple[object, ...]]) -> Callable[[], int]:
        def run() -> int:
            command = getattr(importlib.import_module(f"runwatch.commands.{module}"), func)
            return int(command(*arguments()))

        return run

    return {
        "check": call("check", "cmd_check", lambda: (args.config,)),
        "test-rules": call("test_rules", "cmd_test_rules", lambda: (args.rule_files, args.cases)),
        "run": call("run", "cmd_run", lambda: (args.config,)),
        "outbox": call("outbox", "cmd_outbox", lambda: (args,)),
        "send-test": call("send_test", "cmd_send_test", lambda: (args.config, args.channel)),
        "silence": call("silence", "cmd_silence", lambda: (args,)),
        "state": call("state", "cmd_state", lambda: (args,)),
        "reload": call("run", "cmd_reload", lambda: (args.config, args.timeout)),
        "status": call("status", "cmd_status", lambda: (args.config, args.json)),
        "fake": call("rehearse", "cmd_fake", lambda: (args.provider, args.listen, args.scenario)),
        "demo": call("rehearse", "cmd_demo", lambda: (args.forever, args.metrics_listen)),
        "init": call("init", "cmd_init", lambda: (args,)),
        "hooks": call("hooks", "cmd_hooks", lambda: (args,)),
    }


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as a task group raises them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def report(exc: RunwatchError) -> None:
    """A RunwatchError as the user reads it: a config's problems one per line, else one line."""
    if isinstance(exc, ConfigError):
        from runwatch.commands.common import print_problems

        print_problems(exc, sys.stderr)
    else:
        journal.say(redact(f"runwatch: {exc}"), journal.ERROR, sys.stderr)


def _usage_errors(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "outbox" and args.action == "replay" and bool(args.ids) == bool(args.dead):
        parser.error("outbox replay: give notification ids or --dead (one of them)")


def _quiet_broken_pipe() -> int:
    """``runwatch outbox list | head``: the reader left; exit like a shell tool, without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def _early_health(argv: Sequence[str] | None) -> EarlyHealth | None:
    """``run --config FILE``: bind the metrics address and answer /healthz now, before the imports
    and the state load that make up most of a start (runwatch.httpserver.early_health)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "run":
        return None
    path: str | None = None
    for i, arg in enumerate(args[1:], 1):
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None:
        return None
    from runwatch import httpserver

    listen = httpserver.configured_listen(Path(path))
    early = httpserver.early_health(listen) if listen is not None else None
    if early is not None:
        # /healthz says the process is up, so a supervisor may send a reload already: it must not end
        # the process (SIGHUP's default); the daemon reads its config afresh, and then handles SIGHUP.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return early


def main(argv: Sequence[str] | None = None) -> int:
    early = _early_health(argv)
    try:
        return _main(argv)
    finally:
        if early is not None:
            early.close()


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _usage_errors(parser, args)
    try:
        return _commands(args)[args.command]()
    except RunwatchError as exc:
        report(exc)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if not all(isinstance(e, RunwatchError) for e in leaves):
            raise
        for leaf in leaves:
            assert isinstance(leaf, RunwatchError)
            report(leaf)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        return 130
    return 1
