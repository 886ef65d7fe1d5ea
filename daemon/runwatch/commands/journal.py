"""What a command prints, with the priority journald should give each line when its output goes there.

Under systemd, a command's stdout and stderr are the journal's stream, and journald logs every line at
``info`` unless it starts with a syslog priority (``<3>`` error, ``<4>`` warning: sd-daemon(3),
``SyslogLevelPrefix=`` is on by default). Without one, ``journalctl -p warning`` hides why a start or a
reload failed. So a problem line gets its prefix when, and only when, the stream it goes to is the one
systemd connected (``$JOURNAL_STREAM`` names its device and inode); on a terminal, in a pipe or a file
the output stays exactly what it was. The daemon's own log lines get theirs in :mod:`runwatch.log`.
"""

from __future__ import annotations

from typing import TextIO

from runwatch.log import is_journal_stream

#: sd-daemon(3) priorities, the ones commands print at.
ERROR = 3
WARNING = 4
INFO = 6


def prefixed(text: str, priority: int, stream: TextIO) -> str:
    """``text`` with ``<priority>`` at the start of every line if ``stream`` is the journal's."""
    if not is_journal_stream(stream):
        return text
    return "\n".join(f"<{priority}>{line}" for line in text.split("\n"))


def say(text: str, priority: int, stream: TextIO) -> None:
    """Print ``text`` (already redacted) to ``stream`` at ``priority``."""
    print(prefixed(text, priority, stream), file=stream)
