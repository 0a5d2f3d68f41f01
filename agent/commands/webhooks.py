"""`aftercall webhooks`: the URLs each HTTP gateway must call back, as this agent would sign them.

Kannel and Jasmin cannot sign their callbacks, so the agent puts a token in the URLs it gives
them. A receipt URL goes with every message by itself; the reply (MO) URL must be configured on
the gateway (Kannel's sms-service get-url, Jasmin's HTTP client connector), and nothing else
shows it. It is a bearer secret: printed here on request, never logged.
"""

from __future__ import annotations

import argparse
from typing import Any

from agent.commands.exits import Exit

#: What each gateway's side of the reply URL is called, and what it needs beside it.
_WHERE = {
    "kannel": "smsbox sms-service get-url (append &from=%p&to=%P&text=%a&ts=%T; mo-recode = true)",
    "jasmin": "jCli httpccm -a: url (and a default MO route to that connector)",
    "twilio": "the number's messaging webhook (signed by Twilio: no token)",
    "generic": "the gateway's inbound webhook (signed with the gateway's secret)",
}


def register(subparsers: Any) -> None:
    from agent.settings import add_common_args

    p = subparsers.add_parser(
        "webhooks", help="the reply and receipt URLs to configure on each HTTP gateway "
                         "(Kannel, Jasmin: they carry a token; keep them secret)")
    add_common_args(p)
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.gateways.build import agent_gateways
    from agent.gateways.http import HttpGateway
    from agent.rules.loader import load_rules
    from agent.settings import Settings

    settings = Settings.from_args(args)
    rules = load_rules(settings.rules)
    gateways = agent_gateways(rules.config.gateways, settings)
    base = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
    print(f"# as the agent at {base.rstrip('/')} signs them (--public-url, --http); "
          "a reply URL with t= is a secret: whoever holds it can post replies")
    for name, gw in gateways.items():
        if not isinstance(gw, HttpGateway):
            print(f"{name}: SMPP: receipts and replies come over its bind (deliver_sm)")
            continue
        cfg = gw.config
        preset = cfg.preset.value
        print(f"{name} ({preset}):")
        print(f"  replies:  {cfg.inbound_url()}")
        print(f"            configure as {_WHERE[preset]}")
        print(f"  receipts: {cfg.callback_base}/webhooks/{name}/receipt"
              + (" (the agent sends its own URL, with a token per message, with each text)"
                 if preset in ("kannel", "jasmin") else ""))
    return Exit.OK
