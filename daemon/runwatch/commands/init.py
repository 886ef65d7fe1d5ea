"""``runwatch init``: write the files runwatch ships (starter config and rules, systemd unit, Grafana
dashboard, Prometheus alert rules) out of the installed package, so a pip install has all it needs.

Nothing is overwritten unless asked (``force``): every target is checked before anything is written.
Files are written ``0644`` and folders ``0755`` whatever the umask, because the config holds no secret
and must be readable by the systemd unit's ``DynamicUser``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

#: What each target of ``runwatch init`` writes: paths inside ``runwatch/share``, kept as is.
BUNDLES: dict[str, tuple[str, ...]] = {
    "config": ("runwatch.yaml", "rules/starter.yaml"),
    "systemd": ("systemd/runwatch.service",),
    "grafana": ("grafana/runwatch-dashboard.json",),
    "prometheus": ("prometheus/runwatch-alerts.yaml", "prometheus/runwatch-alerts.test.yaml"),
}


class TargetExists(Exception):
    """Files that are there already; nothing was written."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        super().__init__(", ".join(map(str, paths)))


@dataclass(frozen=True, slots=True)
class Planned:
    """One shipped file and where it goes."""

    source: Traversable
    target: Path


def share() -> Traversable:
    """The ``share`` folder of the installed package."""
    return files("runwatch") / "share"


def shipped(relpath: str) -> str:
    """The text of one shipped file (``systemd/runwatch.service``, ...)."""
    return share().joinpath(*relpath.split("/")).read_text(encoding="utf-8")


def plan(targets: dict[str, Path]) -> list[Planned]:
    """Where each shipped file of each requested bundle goes. ``config`` keeps its ``rules/`` folder;
    the other bundles are flat (``--systemd /etc/systemd/system`` gets ``runwatch.service``)."""
    out: list[Planned] = []
    for bundle, folder in targets.items():
        for rel in BUNDLES[bundle]:
            dest_rel = rel if bundle == "config" else rel.split("/", 1)[1]
            out.append(Planned(share().joinpath(*rel.split("/")), folder / dest_rel))
    return out


def write(targets: dict[str, Path], *, force: bool = False) -> list[Path]:
    """Write the requested bundles; raise :class:`TargetExists` (writing nothing) unless ``force``."""
    planned = plan(targets)
    existing = [p.target for p in planned if p.target.exists()]
    if existing and not force:
        raise TargetExists(existing)
    for p in planned:
        _mkdirs(p.target.parent)
        tmp = p.target.with_name(p.target.name + ".tmp")
        tmp.write_bytes(p.source.read_bytes())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p.target)
    return [p.target for p in planned]


def _mkdirs(folder: Path) -> None:
    missing: list[Path] = []
    for d in [folder, *folder.parents]:
        if d.exists():
            break
        missing.append(d)
    folder.mkdir(parents=True, exist_ok=True)
    for d in missing:
        os.chmod(d, 0o755)


def describe(written: Iterable[Path]) -> list[str]:
    """One line per file written, for the command's output."""
    return [f"wrote {p}" for p in written]


def cmd_init(args: argparse.Namespace) -> int:
    from runwatch.commands import init as starter

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
