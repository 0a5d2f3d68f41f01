"""A minimal AMI peer on loopback for the failure modes the lab cannot produce on demand
(a hung Asterisk that stops answering Ping, a peer that is not Asterisk, a reader that falls
behind), and for load: ``stream`` writes events as fast as the client reads them and, like
Asterisk with ``writetimeout``, drops a client that stops reading for ``write_timeout``."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

LISTCOMMANDS = Path(__file__).resolve().parents[1] / "fixtures" / "ami_listcommands"


class FakeAmi:
    def __init__(self, *, secret: str = "s3cret", banner: bytes = b"Asterisk Call Manager/9.0.0\r\n"):
        self.secret = secret
        self.banner = banner
        self.answer_pings = True
        # What the lab's Asterisk answers to ListCommands (recorded), per privilege level.
        self.list_commands = (LISTCOMMANDS / "least_privilege.txt").read_bytes()
        self.logins = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.host = "127.0.0.1"  # another loopback address: a PBX on a host of its own
        self.connected = asyncio.Event()
        self.resynced = asyncio.Event()  # a client asked CoreShowChannels (its login is done)
        self.write_timeout: float | None = None  # Asterisk's manager.conf writetimeout (s)
        self.dropped_slow_readers = 0

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> int:
        """Listen on a free port, or on ``port`` again (an Asterisk coming back); ``tls``: AMI
        over TLS (Asterisk's manager.conf [general] tlsenable) with that server context."""
        self.server = await asyncio.start_server(self._handle, self.host, port,
                                                 reuse_address=True, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def send_event(self, text: str) -> None:
        await self.send_bytes(text.encode())

    async def send_bytes(self, data: bytes) -> bool:
        """Write to every client; a client that does not take it within ``write_timeout`` is
        disconnected, as Asterisk does. False when some client was dropped."""
        ok = True
        for w in list(self.writers):
            if w.is_closing():
                continue
            w.write(data)
            try:
                await asyncio.wait_for(w.drain(), self.write_timeout)
            except (TimeoutError, ConnectionError):
                self.dropped_slow_readers += 1
                w.transport.abort()
                self.writers.remove(w)
                ok = False
        return ok

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.write_timeout is not None:
            # Asterisk writes to a small buffer and gives up on a reader that stops: no
            # megabytes of kernel send buffer to hide a stalled reader behind.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            writer.transport.set_write_buffer_limits(high=8192)
        writer.write(self.banner)
        self.connected.set()
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in block.decode().split("\r\n") if ": " in line
                )
                action = headers.get("Action", "").lower()
                aid = headers.get("ActionID", "")
                if action == "login":
                    self.logins += 1
                    if headers.get("Secret") == self.secret:
                        writer.write(f"Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n".encode())
                    else:
                        writer.write(f"Response: Error\r\nActionID: {aid}\r\nMessage: Authentication failed\r\n\r\n".encode())
                elif action == "listcommands":
                    writer.write(self.list_commands.replace(b"ActionID: 1\r\n",
                                                            f"ActionID: {aid}\r\n".encode()))
                elif action == "coreshowchannels":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
                                 f"Message: Channels will follow\r\n\r\n"
                                 f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n"
                                 f"EventList: Complete\r\nListItems: 0\r\n\r\n".encode())
                    self.resynced.set()
                elif action == "ping":
                    if self.answer_pings:
                        writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n".encode())
                elif action != "logoff":
                    # Asterisk answers every action it does not serve (or this user may not run).
                    writer.write(f"Response: Error\r\nActionID: {aid}\r\n"
                                 f"Message: Invalid/unknown command: {headers.get('Action')}\r\n\r\n"
                                 .encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


#: The ``fake_pbx`` fixture (tests/ami/conftest.py): ``await fake_pbx(secret, tls=None)``.
StartPbx = Callable[..., Awaitable[FakeAmi]]


# ---- clones of the lab's recorded calls, for load -------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_CALLER = "+919876543210"
_TS = re.compile(rb"^Timestamp: (\d+\.\d+)\r$", re.MULTILINE)
_CDR_TIME = re.compile(r'"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"')


class RecordedCall:
    """One recorded lab call (AMI transcript + its Master.csv row), cloned on demand with a fresh
    call id, caller number and timestamps, as if it had just ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        data = (FIXTURES / "ami" / f"{name}.txt").read_bytes()
        blocks = [b + b"\r\n\r\n" for b in data.split(b"\r\n\r\n") if b.strip()]
        # Only the call's own events: those naming one of its channels' ids.
        self.blocks = [b for b in blocks if b"aftercall-lab-" in b]
        stamps = [float(m.group(1)) for b in self.blocks for m in _TS.finditer(b)]
        self.first, self.last = min(stamps), max(stamps)
        m = re.search(rb"Linkedid: (aftercall-lab-[\d.]+)", data)
        assert m is not None, name
        self.linkedid = m.group(1).decode()
        cdr = (FIXTURES / "cdr" / "Master.csv").read_text().splitlines()
        self.cdr = next((ln for ln in cdr if f'"{self.linkedid}"' in ln), None)

    def clone(self, tag: str, caller: str, ends_at: float) -> tuple[bytes, str | None, str]:
        """(AMI bytes, Master.csv line or None, call id) of a copy ending at ``ends_at``."""
        shift = ends_at - self.last
        prefix = f"{tag}-aftercall-lab-".encode()

        def ts(m: re.Match[bytes]) -> bytes:
            return b"Timestamp: %.6f\r" % (float(m.group(1)) + shift)

        out = []
        for b in self.blocks:
            b = _TS.sub(ts, b).replace(b"aftercall-lab-", prefix)
            out.append(b.replace(_CALLER.encode(), caller.encode())
                        .replace(_CALLER[1:].encode(), caller[1:].encode()))
        call_id = self.linkedid.replace("aftercall-lab-", prefix.decode())
        line = None
        if self.cdr is not None:
            def when(m: re.Match[str]) -> str:
                t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                return f'"{datetime.fromtimestamp(t.timestamp() + shift, UTC):%Y-%m-%d %H:%M:%S}"'

            line = _CDR_TIME.sub(when, self.cdr).replace("aftercall-lab-", prefix.decode())
            line = line.replace(_CALLER, caller)
        return b"".join(out), line, call_id


def recorded_calls() -> list[RecordedCall]:
    """Every recorded lab call (tests/fixtures/ami/*.txt) that has its CDR row."""
    calls = [RecordedCall(p.stem) for p in sorted((FIXTURES / "ami").glob("*.txt"))]
    return [c for c in calls if c.cdr is not None]
