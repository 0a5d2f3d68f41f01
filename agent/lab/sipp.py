"""SIPp on the lab: agent phones (UAS) that stay up, and callers (UAC) placed one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import LabError
from agent.lab import ports

SCENARIOS = Path(__file__).resolve().parent / "sipp"
ASTERISK = "127.0.0.1:5060"

# Agent phones: extension -> (SIP port, scenario). Ports match asterisk_conf/pjsip.conf.
PHONES: dict[str, tuple[int, str]] = {
    "2001": (5071, "uas_answer.xml"),
    "2002": (5072, "uas_answer.xml"),
    "2003": (5073, "uas_hangup.xml"),
    "2008": (5078, "uas_noanswer.xml"),
    "2009": (5079, "uas_busy.xml"),
}
#: Phones only the other dialplan styles (asterisk_conf/dialplans/) route calls to.
STYLE_PHONES: dict[str, tuple[int, str]] = {
    "2004": (5074, "uas_refer.xml"),  # answers, then blind-transfers the caller to 2002
    "pstn": (5081, "uas_answer.xml"),  # the far end of outbound calls, behind the trunk
}
LAB_PHONES = {**PHONES, **STYLE_PHONES}
#: Calls placed by phones come from here: not the trunk's 127.0.0.1, so Asterisk identifies
#: the phone by its From user (res_pjsip_endpoint_identifier_user).
PHONE_IP = "127.0.0.2"

# DIDs of asterisk_conf/extensions.conf
DID_SUPPORT = "18005550100"
DID_SALES = "18005550200"
DID_DIRECT = "18005550300"
DID_BUSY = "18005550400"
DID_BILLING = "18005550500"
DID_AGENT_HANGS_UP = "18005550600"
DID_APPOINTMENT = "18005550700"
DID_NO_ANSWER = "18005550800"
DID_RING_TIMEOUT = "18005550900"  # rings in the dialplan, Hangup(19), no Dial
DID_RING_GROUP = "18005551000"
DID_TRANSFER = "18005551100"  # the agent (2004) blind-transfers the caller to 2002
DID_WRAPUP = "18005551200"  # 2003 answers and hangs up; then gives a wrap-up code (ours only)
DID_HINDI = "18005551300"  # the Billing queue with the caller's channel language set to hi
DID_GREETING = "18005551400"  # Answer(), a long greeting (Playback), then the agent: callers leave
DID_QUEUE_WAIT = "18005551500"  # Answer(), a queue whose only member is paused: nobody rings
DID_RING_GROUP_BUSY = "18005551600"  # a ring group of a busy phone and one that rings on
WRAPUP_AGI, WRAPUP_EVENT = "*88", "*89"  # feature codes the agent dials, + the code
PSTN_NUMBER = "+919845012345"  # what phones dial for an outbound call


def _sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise LabError("sipp is not installed: apt-get install sip-tester")
    return path


def _udp_port_bound(port: int) -> bool:
    return not ports.udp_free(port)


class AgentPhones:
    """The SIPp UAS processes behind the lab's agent extensions."""

    def __init__(self, agent_hangup_ms: int = 2000) -> None:
        self.agent_hangup_ms = agent_hangup_ms
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._media: dict[str, int] = {}  # extension -> its reserved block (ports.PORTS)

    def args(self, ext: str, media_port: int) -> list[str]:
        """One phone's SIPp command line. ``-key run``: a fresh token for this SIPp run in
        the To tag it answers with and the branches of what it sends (see uas_answer.xml)."""
        port, scenario = LAB_PHONES[ext]
        return [_sipp(), "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
                "-mp", str(media_port), "-d", str(self.agent_hangup_ms), "-nostdin",
                "-max_recv_loops", "100", "-key", "run", secrets.token_hex(4)]

    def start(self) -> None:
        for ext in LAB_PHONES:
            if ext in self._procs and self._procs[ext].poll() is None:
                continue
            if ext not in self._media:
                self._media[ext] = ports.PORTS.reserve()
            log = self._log(ext)
            try:
                self._procs[ext] = subprocess.Popen(
                    self.args(ext, self._media[ext]),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                )
            finally:
                os.close(log)  # SIPp has its own copy; Popen closes only the fds it made

    def _log(self, ext: str) -> int:
        path = Path(tempfile.gettempdir()) / f"aftercall-sipp-{ext}.log"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def wait_ready(self, timeout: float = 5.0) -> None:
        """SIPp has no readiness signal: wait until every phone's SIP port and media ports
        are bound. SIPp binds its media ports after its SIP port and exits if it cannot, so
        a phone that could not is reported here, not by the first call it fails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if all(_udp_port_bound(p) for ext in self._procs for p in self._ports(ext)):
                self.check()
                return
            time.sleep(0.02)
        unbound = [ext for ext in self._procs
                   if not all(_udp_port_bound(p) for p in self._ports(ext))]
        raise LabError("SIPp agent phones did not bind their ports within "
                       f"{timeout:.0f}s: {', '.join(unbound)}")

    def _ports(self, ext: str) -> tuple[int, int, int]:
        media = self._media[ext]
        return LAB_PHONES[ext][0], media, media + 2  # SIP; audio and video RTP (-mp)

    def _log_tail(self, ext: str) -> str:
        return (Path(tempfile.gettempdir()) / f"aftercall-sipp-{ext}.log").read_text(
            errors="replace")

    def check(self) -> None:
        dead = [ext for ext, p in self._procs.items() if p.poll() is not None]
        if dead:
            why = "; ".join(f"{ext}: {(self._log_tail(ext).strip().splitlines() or [''])[-1]}"
                            for ext in dead)
            raise LabError(f"SIPp agent phones exited: {why}")

    def stop(self) -> None:
        for p in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        for p in self._procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()
        for port in self._media.values():
            ports.PORTS.release(port)
        self._media.clear()

    def __enter__(self) -> AgentPhones:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class CallResult:
    scenario: str
    did: str
    caller: str
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# Caller scenarios: what the caller does.
TALK = "uac_call.xml"  # talks for duration_ms after the answer, then hangs up
WAIT_FOR_BYE = "uac_remote_bye.xml"  # stays until the far end hangs up
REFUSED = "uac_reject.xml"  # expects a 4xx-6xx final response
GIVE_UP = "uac_cancel.xml"  # hangs up while it is still ringing, after duration_ms


def caller_args(
    scenario: str,
    did: str,
    *,
    sip_port: int,
    media_port: int,
    caller: str = "+919876543210",
    caller_name: str = "Ravi Kumar",
    duration_ms: int = 1000,
    anonymous: bool = False,
    timeout_s: int = 60,
    source_ip: str = "127.0.0.1",
) -> list[str]:
    if anonymous:
        caller, caller_name, domain = "anonymous", "Anonymous", "anonymous.invalid"
        privacy = "Privacy: id"
    else:
        domain, privacy = "127.0.0.1", "X-Aftercall-Lab: 1"
    # The call's SIP identity (Call-ID, From tag, branches) carries a fresh token, not only
    # SIPp's pid: see the uac_*.xml scenarios for what a repeated one does to the next call.
    run = secrets.token_hex(4)
    return [
        _sipp(), ASTERISK, "-sf", str(SCENARIOS / scenario), "-s", did, "-m", "1", "-l", "1",
        "-i", source_ip, "-p", str(sip_port), "-mp", str(media_port),
        "-d", str(duration_ms), "-key", "caller", caller, "-key", "caller_name", caller_name,
        "-key", "caller_domain", domain, "-key", "privacy", privacy,
        "-key", "run", run, "-cid_str", f"%u-%p-{run}@%s",
        "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin",
    ]


async def place_call(scenario: str, did: str, **kw: object) -> CallResult:
    """Run one SIPp caller to the end; returns its exit code (0: the scenario completed). Its
    SIP port and media ports are reserved for it (ports.PORTS) until it exits."""
    with ports.PORTS.block() as sip_port, ports.PORTS.block() as media_port:
        args = caller_args(scenario, did, sip_port=sip_port, media_port=media_port,
                           **kw)  # type: ignore[arg-type]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    return CallResult(scenario, did, args[args.index("caller") + 1], proc.returncode or 0,
                      _summary(out.decode(errors="replace")))


def _summary(output: str) -> str:
    """SIPp's last screen (message counts per step) and its error lines: enough to tell an
    unanswered INVITE from a failed BYE, or a port it could not bind, when a lab test reports
    a failed call."""
    screens = output.split("------------------------------ Scenario Screen")
    errors = [ln for ln in output.splitlines()
              if any(k in ln.lower() for k in ("error", "unexpected", "abort", "timeout", "unable"))]
    return ("Scenario Screen" + screens[-1])[-3000:] + "\n" + "\n".join(errors[-10:])
