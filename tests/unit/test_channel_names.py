"""Channel names as each Asterisk channel driver makes them (chan_pjsip and chan_sip
``<endpoint>-%08x``, chan_local ``<exten>@<context>-%08x;n``, chan_iax2 ``<peer>-%d`` with the
call number in decimal, chan_dahdi ``i<span>/<number>-%x`` on ISDN and ``<channel>-<n>`` on
analog lines) read back to the endpoint that ``pbx: trunks/phones`` and ``agents:`` name."""

from __future__ import annotations

import pytest

from agent.calls.pbx import Directory, PbxProfile
from agent.calls.state import extension


@pytest.mark.parametrize(("name", "endpoint"), [
    ("PJSIP/2001-00000017", "2001"),
    ("PJSIP/carrier-in-0000001a", "carrier-in"),
    ("PJSIP/my-phone", "my-phone"),              # an interface: no counter to strip
    ("SIP/provider-0000002b", "provider"),
    ("Local/2001@from-queue-0000000c;1", "2001"),
    ("IAX2/site-b-1234", "site-b"),
    ("IAX2/10.0.0.7:4569-7", "10.0.0.7:4569"),   # a peer not in iax.conf: its address
    ("IAX2/site-b", "site-b"),
    ("DAHDI/i1/9876543210-1a", "i1"),            # ISDN span 1
    ("DAHDI/i12/-3", "i12"),                     # no calling number
    ("DAHDI/3-1", "3"),                          # analog channel 3
    ("DAHDI/g0", "g0"),                          # a group, as a dial string names it
])
def test_each_driver_s_channel_names_give_its_endpoint(name: str, endpoint: str) -> None:
    assert extension(name) == endpoint


def test_trunks_and_phones_may_be_interfaces_or_patterns_of_any_driver() -> None:
    profile = PbxProfile(trunks=frozenset({"DAHDI/i*", "site-b"}),
                         phones=frozenset({"DAHDI/[1-8]", "IAX2/home-*"}))
    assert profile.endpoint_kind("DAHDI/i1/9876543210-1a") == "trunk"
    assert profile.endpoint_kind("DAHDI/i2/-4") == "trunk"
    assert profile.endpoint_kind("IAX2/site-b-1234") == "trunk"
    assert profile.endpoint_kind("DAHDI/3-1") == "phone"          # an FXS line
    assert profile.endpoint_kind("IAX2/home-ravi-77") == "phone"
    assert profile.endpoint_kind("DAHDI/9-1") is None
    assert profile.endpoint_kind("PJSIP/2001-00000017") is None
    # A trunk leg is the customer, never an agent: an outbound call over a PRI.
    assert profile.far_is_trunk("DAHDI/i1/9876543210-2b")


def test_an_agent_on_an_iax2_or_analog_phone_is_found_in_the_directory() -> None:
    directory = Directory({"IAX2/home-ravi": ("Ravi", "+919812345678"),
                           "DAHDI/3": ("Desk", None)})
    for channel, key in (("IAX2/home-ravi-77", "IAX2/home-ravi"), ("DAHDI/3-1", "DAHDI/3")):
        assert directory.lookup(channel)[0] == key  # type: ignore[index]
        assert directory.lookup(extension(channel))[0] == key  # type: ignore[index]
