"""AMI framing with bounds: panoramisk's protocol, minus unbounded buffering and silent skipping.

panoramisk keeps whatever follows the last blank line and prepends it to the next chunk. A
peer that never sends the blank line (a broken proxy, a hostile host on the AMI network)
grows that buffer without limit (100 MB in 7 s) until the ping watchdog gives up, and each
chunk re-splits all of it. Here a message that grows past ``max_message`` bytes ends the
connection with ``ami_message_too_long`` (the client reconnects and resyncs as after any lost
link). Undecodable bytes and blocks that are not AMI messages are skipped as before, but
counted: the first is logged at once with a sample, the count when the connection ends.
"""

from __future__ import annotations

import codecs
from typing import Any

import structlog
from panoramisk import utils
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = structlog.get_logger("aftercall.ami")

MAX_MESSAGE = 1 << 20  # bytes of one unterminated AMI message; Asterisk's are a few KB
_SEP = utils.EOL + utils.EOL


def _sample(text: str) -> str:
    return text[:80].encode("unicode_escape").decode("ascii")


class BoundedAMIProtocol(AMIProtocol):  # type: ignore[misc]
    max_message = MAX_MESSAGE

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.junk = 0  # blocks that are not AMI messages
        self.undecodable = 0  # bytes replaced because they are not UTF-8

    def data_received(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        bad = text.count("\ufffd")
        if bad:
            if not self.undecodable:
                log.warning("ami_input_undecodable", sample=_sample(text), count=bad)
            self.undecodable += bad
            text = text.replace("\ufffd", "")
        if self.version is None and text.startswith("Asterisk Call Manager/"):
            first, _, _ = text.partition(utils.EOL)
            self.version = first.partition("/")[2].strip()
        if self.queue:
            text = self.queue.popleft() + text
        blocks = text.split(_SEP)
        rest = blocks.pop()
        if len(rest) > self.max_message:
            log.error("ami_message_too_long", pending_bytes=len(rest), bound=self.max_message,
                      action="closing the AMI connection; it will reconnect and resync")
            self.queue.clear()
            self.transport.close()
            return
        self.queue.append(rest)
        for block in blocks:
            block = block.strip()
            message = Message.from_line(block) if block else None
            if message is None:
                if block:
                    if not self.junk:
                        log.warning("ami_input_skipped", sample=_sample(block),
                                    why="not an AMI message")
                    self.junk += 1
                continue
            self.handle_message(message)

    def connection_lost(self, exc: Any) -> None:
        if self.junk or self.undecodable:
            log.warning("ami_input_skipped_total", messages=self.junk,
                        undecodable_bytes=self.undecodable)
        super().connection_lost(exc)
