"""The FastAGI hook server: parsing the hook URL, and peers that misbehave."""

from __future__ import annotations

import asyncio

from agent.ami.agi import AgiServer, parse_hook
from agent.loop.watch import pbx_at


def test_parse_hook_tags_and_variables():
    assert parse_hook("tag?name=vip", []) == ("tag", ("vip",), {})
    route, tags, variables = parse_hook("attach?tag=lead,vip&CAMPAIGN=diwali&bad-name=x",
                                        ["TICKET=123", "noequals"])
    assert route == "attach" and tags == ("lead", "vip")
    assert variables == {"CAMPAIGN": "diwali", "TICKET": "123"}


async def test_hook_attaches_and_answers_like_asterisk_expects():
    seen = []

    def attach(uniqueid, channel, tags, variables, pbx):
        seen.append((uniqueid, tags, dict(variables), pbx))
        return True

    server = AgiServer(attach, port=0)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\nagi_network_script: tag?name=vip&TICKET=42\n"
                 b"agi_uniqueid: lab-1.0\nagi_channel: PJSIP/trunk-1\n\n")
    commands = []
    for _ in range(2):  # SET VARIABLE __TICKET, SET VARIABLE AFTERCALL_ATTACHED
        commands.append((await asyncio.wait_for(reader.readline(), 5)).decode().strip())
        writer.write(b"200 result=1\n")
    await writer.drain()
    assert commands == ['SET VARIABLE __TICKET "42"', "SET VARIABLE AFTERCALL_ATTACHED 1"]
    assert seen == [("lab-1.0", ("vip",), {"TICKET": "42"}, None)]
    writer.close()
    await server.close()


async def test_peer_closing_before_headers_does_not_spin():
    server = AgiServer(lambda *a: True, port=0)
    await server.start()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\n")
    writer.close()
    await asyncio.sleep(0.05)
    assert server.requests == 0
    await server.close()


async def test_disposition_route_hands_the_code_and_answers():
    seen = []

    async def wrapup(code, call_id, agent, channel, pbx):
        seen.append((code, call_id, agent, channel, pbx))
        return code == "SALE"

    server = AgiServer(lambda *a: True, port=0, wrapup=wrapup)
    await server.start()

    async def ask(script: bytes) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\nagi_network_script: " + script +
                     b"\nagi_uniqueid: lab-2.0\nagi_channel: PJSIP/2002-0000000a\n\n")
        line = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        writer.write(b"200 result=1\n")
        await writer.drain()
        writer.close()
        return line

    assert await ask(b"disposition?code=SALE") == "SET VARIABLE AFTERCALL_WRAPUP 1"
    assert await ask(b"wrapup?code=LOST&call=lab-1.9") == "SET VARIABLE AFTERCALL_WRAPUP 0"
    assert await ask(b"disposition?code=bad%20code") == "SET VARIABLE AFTERCALL_WRAPUP 0"
    assert await ask(b"wrapup?code=LOST&call=1.9&pbx=del") == "SET VARIABLE AFTERCALL_WRAPUP 0"
    assert seen == [("SALE", None, None, "PJSIP/2002-0000000a", None),
                    ("LOST", "lab-1.9", None, "PJSIP/2002-0000000a", None),
                    ("LOST", "1.9", None, "PJSIP/2002-0000000a", "del")]
    await server.close()


async def test_the_pbx_of_a_hook_is_the_one_whose_host_it_came_from():
    hosts = [("blr", "127.0.0.1"), ("del", "127.0.0.2")]
    assert await pbx_at(hosts, "127.0.0.2") == "del"
    assert await pbx_at(hosts, "::ffff:127.0.0.2") == "del"  # a dual-stack listener's view
    assert await pbx_at(hosts, "127.0.0.3") is None
    assert await pbx_at(hosts, None) is None
    assert await pbx_at([("blr", "127.0.0.1"), ("del", "127.0.0.1")], "127.0.0.1") is None
    assert await pbx_at([("blr", "localhost"), ("del", "127.0.0.2")], "127.0.0.1") == "blr"


async def test_a_hook_names_the_pbx_at_its_address_unless_it_names_one():
    seen = []

    async def wrapup(code, call_id, agent, channel, pbx):
        seen.append(pbx)
        return True

    async def pbx_of(address):
        return {"127.0.0.2": "del"}.get(address)

    server = AgiServer(lambda *a: True, port=0, wrapup=wrapup, pbx_of=pbx_of)
    await server.start()

    async def ask(script: bytes, source: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port,
                                                       local_addr=(source, 0))
        writer.write(b"agi_network: yes\nagi_network_script: " + script + b"\n\n")
        await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"200 result=1\n")
        await writer.drain()
        writer.close()

    await ask(b"disposition?code=SALE", "127.0.0.2")
    await ask(b"disposition?code=SALE&pbx=blr", "127.0.0.2")  # named: as named
    await ask(b"disposition?code=SALE", "127.0.0.1")
    assert seen == ["del", "blr", None]
    await server.close()
