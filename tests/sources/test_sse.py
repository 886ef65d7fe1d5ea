"""The Server-Sent Events reader: the format as a server may send it, split anywhere."""

from __future__ import annotations

import pytest

from runwatch.sources.sse import MAX_LINE, SseError, SseEvent, SseParser

STREAM = (
    b": keep-alive comment\n"
    b'event: ready\ndata: {"heartbeat_interval": 5}\n\n'
    b'id: evt_1\r\nevent: log\r\ndata: {"a":\r\ndata:  1}\r\n\r\n'
    b"event:heartbeat\rdata:\r\r"
    b"data: plain message\nunknown: field\nretry: 2500\n\n"
    b"\n\n"
)
WANT = [
    SseEvent("ready", '{"heartbeat_interval": 5}'),
    SseEvent("log", '{"a":\n 1}', "evt_1"),
    SseEvent("heartbeat", ""),
    SseEvent("message", "plain message", None, 2500),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(STREAM)])
def test_events_come_out_whole_however_the_bytes_are_cut(size: int) -> None:
    parser = SseParser()
    got = []
    for i in range(0, len(STREAM), size):
        got.extend(parser.feed(STREAM[i : i + size]))
    assert got == WANT
    assert parser.last_id == "evt_1"
    assert parser.comments == 1


def test_a_line_that_never_ends_is_refused() -> None:
    parser = SseParser()
    assert parser.feed(b"data: " + b"x" * (MAX_LINE - 6)) == []
    with pytest.raises(SseError):
        parser.feed(b"x")
