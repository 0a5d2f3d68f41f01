"""A minimal AMI peer on loopback for the failure modes the lab cannot produce on demand
(a hung Asterisk that stops answering Ping, a peer that is not Asterisk)."""

from __future__ import annotations

import asyncio
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
        self.connected = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def send_event(self, text: str) -> None:
        for w in self.writers:
            w.write(text.encode())
            await w.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
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
                elif action == "ping" and self.answer_pings:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
