"""Split a recorded raw AMI stream into panoramisk Messages, through panoramisk's own reader.

Replays must exercise the code live traffic goes through, so the bytes are pushed into a real
``panoramisk.ami_protocol.AMIProtocol`` (in read sizes like the live socket's) and the events it
dispatches are collected: framing, multi-valued headers (``ChanVariable`` becomes a list when
repeated, a string when alone) and decoding are panoramisk's, not a second parser's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from panoramisk.ami_protocol import AMIProtocol  # type: ignore[import-untyped]
from panoramisk.message import Message  # type: ignore[import-untyped]

#: What one ``read()`` of the live AMI socket returns at most (the lab recorder's size too).
READ_SIZE = 65536


class _Sink:
    """Stands in for panoramisk's Manager: the protocol hands it every event it parses."""

    forgetable_actions: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.awaiting_actions: list[Any] = []

    def dispatch(self, message: Message) -> None:
        self.messages.append(message)

    def connection_lost(self, exc: object) -> None:  # an ``Event: Shutdown`` in the stream
        pass


class _NoTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def iter_messages(
    data: bytes, *, encoding: str = "utf8", read_size: int = READ_SIZE
) -> Iterator[Message]:
    """Every event in ``data`` (raw AMI bytes as Asterisk sent them after login), in order.

    ``encoding`` is what the live Manager is configured with (panoramisk's default, utf8;
    undecodable bytes are dropped, as live). Reads are cut after a line feed so that, unlike a
    real socket, a multi-byte character is never split between two of them.
    """
    proto = AMIProtocol()
    proto.connection_made(_NoTransport())
    proto.encoding = encoding  # type: ignore[attr-defined]
    sink = _Sink()
    proto.factory = sink
    start, size = 0, max(1, read_size)
    while start < len(data):
        end = start + size
        if end < len(data):
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut >= start else end
        proto.data_received(data[start:end])
        start = end
        if sink.messages:
            yield from sink.messages
            sink.messages.clear()
    # A recording cut off without the final blank line still holds a whole last block.
    proto.data_received(b"\r\n\r\n")
    yield from sink.messages
    sink.messages.clear()


def recorded_answers(data: bytes) -> Callable[[str, Mapping[str, str]],
                                              Awaitable[tuple[dict[str, Any], list[dict[str, Any]]]]]:
    """An action runner (agent.ami.inventory's ``Action``) that answers from a recording whose
    ActionIDs name the requests (``PJSIPShowEndpoint/ops1``, agent/lab/record.py): the
    response, then the events of its list without the Complete one."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for raw in data.decode(errors="replace").split("\r\n\r\n"):
        block: dict[str, Any] = {}
        for line in raw.split("\r\n"):
            key, sep, value = line.partition(": ")
            if not sep:
                key, sep, value = line.partition(":")
            if sep:
                old = block.get(key)
                block[key] = value if old is None else [*(old if isinstance(old, list)
                                                         else [old]), value]
        if "ActionID" in block:
            by_id.setdefault(str(block["ActionID"]), []).append(block)

    async def answer(name: str, headers: Mapping[str, str]
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        blocks = by_id.get("/".join([name, *headers.values()]))
        if not blocks:
            return {"Response": "Error", "Message": f"Invalid/unknown command: {name}"}, []
        return blocks[0], [b for b in blocks[1:]
                           if not str(b.get("Event", "")).endswith("Complete")]

    return answer
