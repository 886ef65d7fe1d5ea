"""Server-Sent Events, read incrementally and tolerantly (the WHATWG event-stream format).

A stream is lines (``\\n``, ``\\r\\n`` or ``\\r``); ``field: value`` lines build an event, a blank line
dispatches it, ``:`` starts a comment (a keep-alive some servers send). ``data`` lines join with
``\\n``; ``id`` is the id to resume from (``Last-Event-ID``); ``retry`` the reconnection delay the
server asks for, in milliseconds. Unknown fields are ignored, as the format says. One line longer than
:data:`MAX_LINE` is refused (a server that never ends a line must not grow memory without bound).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The longest line a stream may send (an AgentLogEvent is far below it).
MAX_LINE = 1024 * 1024


class SseError(ValueError):
    """The stream broke the format beyond what a tolerant reader takes (a line without end)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``message`` when the stream names none), its data, its id."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SseParser:
    """Feed it the bytes as they arrive; it returns the events each chunk completes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self._fields = False
        #: The stream's last event id (what a reconnection sends as ``Last-Event-ID``).
        self.last_id: str | None = None
        #: Comment lines seen (keep-alives).
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                if len(self._buffer) > MAX_LINE:
                    raise SseError(f"a line longer than {MAX_LINE} bytes")
                return events
            end, after = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[after:]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        self._fields = True
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_id = value or None
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._fields:
            return None
        event = SseEvent(self._event or "message", "\n".join(self._data), self._id or None, self._retry)
        self._event, self._data, self._id, self._retry, self._fields = "", [], None, None, False
        return event


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line ends and the next begins (a ``\\r`` at the very end waits for more: it
    may be the first half of ``\\r\\n``)."""
    nl = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 or (nl != -1 and nl < cr):
        return None if nl == -1 else (nl, nl + 1)
    if cr + 1 == len(buffer):
        return None
    return (cr, cr + 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, cr + 1)
