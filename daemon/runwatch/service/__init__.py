"""The daemon as a service: its task group, signals and sd_notify (``app``), building and validating
its parts from a config (``assemble``), reload (``reload``), the operations endpoints (``endpoints``:
/metrics, /healthz, /readyz), the push listener (``ingest``: the providers' webhooks on
``ingest_listen``), the live-log streams of runs in flight (``live_logs``), retention, and systemd's
notify protocol (``systemd``).

May import every package but ``commands``, ``demo`` and ``fakes``; only those (and tests) import it.
"""

from runwatch.service.app import Daemon
from runwatch.service.assemble import build_channels, check, load_ruleset

__all__ = ["Daemon", "build_channels", "check", "load_ruleset"]
