"""One running agent per name on a shared database: the name is held by a session lock.

Agents sharing PostgreSQL are told apart by their names (``--agent-name``): a claim, an
interrupted submit judged at a restart, the texts each counts of the others. Two running agents
with one name (a copied configuration) would take each other's submits for their own. An agent
therefore holds its name with a session advisory lock on a connection of its own for as long as
it runs; a second agent with that name is refused at start, naming where the first one runs.
A process that dies loses its connection and with it the lock (a host that dies: within about
30 s, by TCP keepalive), so a restart is never refused for its own past.
"""

from __future__ import annotations

import hashlib

import asyncpg

from agent.errors import ConfigError

#: The first key of the lock: which application's advisory locks these are ("aftc").
NAMESPACE = 0x61667463
#: A dead peer's connection is noticed within idle + interval * count seconds.
KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
             "tcp_keepalives_count": "4"}


def name_key(name: str) -> int:
    """The lock's second key: a signed 32-bit hash of the name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


async def hold_name(url: str, name: str, where: str, *, timeout: float = 10.0
                    ) -> asyncpg.Connection:
    """The connection that holds ``name`` while it stays open. Raises ConfigError when a
    running agent holds it (StoreError-like failures to connect are asyncpg's: the caller's)."""
    conn = await asyncpg.connect(url, timeout=timeout, server_settings={
        "application_name": f"aftercall:{name}", **KEEPALIVE})
    try:
        key = name_key(name)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", NAMESPACE, key):
            return conn
        holder = await conn.fetchrow(
            "SELECT host(a.client_addr) AS addr, a.backend_start, a.application_name"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.classid::bigint = $1"
            " AND l.objid::bigint = $2 AND l.objsubid = 2 AND l.granted",
            NAMESPACE & 0xFFFFFFFF, key & 0xFFFFFFFF)
    except BaseException:
        await conn.close()
        raise
    await conn.close()
    seen = ""
    if holder is not None:
        seen = (f" (connected from {holder['addr'] or 'a local socket'} since "
                f"{holder['backend_start']:%Y-%m-%d %H:%M:%S %Z}, as {holder['application_name']})")
    raise ConfigError(
        f"{where}: the agent name {name!r} is in use by another running agent{seen}; give each "
        "agent sharing the database its own name (--agent-name, AFTERCALL_AGENT_NAME)")
