"""docker/compose.yaml built and run for real: SIPp calls through the stack to SMS delivered to the
simulator's handsets, an agent crash, image hygiene, and the Grafana dashboard's metrics."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compose_stack import (
    FIGURES,
    LAB_AT_SESSION_START,
    REPO,
    Stack,
    engine_is_local,
    load_engine,
    main_pid_uid,
    port_holders,
)

from promtext import exposed_names, queried_metrics

from devkit.harness import rules_with
from agent.lab.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.compose]

IMAGES = {"asterisk": "aftercall/asterisk:dev", "agent": "aftercall/agent:dev",
          "sipp": "aftercall/sipp:dev"}
SUPPORT_CALLER = "919876543211"   # caller.sh's queue_answered, +91 (rules.yaml region IN)
ABANDONED_CALLER = "919876543210"  # caller.sh's queue_abandoned
PRIYA = "919812345678"            # agent 2001's mobile (rules.yaml agents), texted on connect
TICKET_TEXT = re.compile(r"Hi Ravi Kumar, your ticket #(\d+) is logged\. "
                         r"Track it: https://acme\.in/l/\S+")
SORRY_TEXT = "Sorry we missed your call to Billing. We will call you back soon. -ACME"
DASHBOARD = REPO / "deploy/grafana/aftercall-dashboard.json"


def _digits(number: str | None) -> str:
    return (number or "").lstrip("+")


def _to(handsets: list[dict[str, Any]], number: str) -> list[str]:
    return [m["text"] for m in handsets if _digits(m["dest"]) == number]


@pytest.fixture(scope="module")
def stack(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    lab = Lab()
    lab_was_running = lab.running()
    if lab_was_running:
        lab.down()  # same ports; started again below
    busy = port_holders()
    assert not busy, f"the stack's ports are in use on 127.0.0.1: {', '.join(busy)}"
    work = tmp_path_factory.mktemp("compose")
    # The repository's rules, with quiet hours away from now, a talk time SIPp's 3 s call meets,
    # no 24 h cooldown and room for more than 3 texts an hour to one number (the tests text
    # the same support caller five times).
    rules = rules_with(work, ("min_talk: 30s", "min_talk: 1s"),
                       ("    cooldown: 24h               # per recipient per rule\n", ""),
                       ("per_number: 3/1h ", "per_number: 20/1h"))
    rules.chmod(0o644)  # read by the agent's user through the bind mount
    secrets_dir = work / "secrets"
    secrets_dir.mkdir(mode=0o700)
    values = {}
    # As docker/secrets/README.md makes them (SMPP 3.4 caps a bind password at 8 characters).
    for name, nbytes in (("ami_secret", 24), ("smpp_password", 6)):
        values[name] = secrets.token_urlsafe(nbytes)
        (secrets_dir / name).write_text(values[name] + "\n")
        # As docker/secrets/README.md says: the directory private, the files readable by the
        # images' uid 10001 (compose mounts a file secret with its host owner and mode).
        (secrets_dir / name).chmod(0o644)

    t0 = time.monotonic()
    variables = load_engine().base_images(docker_engine)
    FIGURES["base images (debootstrap + import, 0 when cached)"] = f"{time.monotonic() - t0:.1f}s"
    s = Stack.create(docker_engine, {**variables, "AFTERCALL_RULES_FILE": str(rules),
                                     "AFTERCALL_SECRETS_DIR": str(secrets_dir)})
    s.figures["secrets"] = values
    FIGURES["compose"] = s.compose("version", "--short").stdout.strip()
    s.compose("down", "-v", "--remove-orphans", check=False)  # a run that was killed
    try:
        t0 = time.monotonic()
        s.compose("build")
        FIGURES["compose build"] = f"{time.monotonic() - t0:.1f}s"
        t0 = time.monotonic()
        s.compose("up", "-d")
        s.wait_healthy()
        FIGURES["compose up until every service is healthy"] = f"{time.monotonic() - t0:.1f}s"
        yield s
    finally:
        t0 = time.monotonic()
        s.compose("down", "-v", "--remove-orphans", check=False)
        FIGURES["compose down -v"] = f"{time.monotonic() - t0:.1f}s"
        if docker_engine.private:
            # vfs keeps a full copy per layer: drop what this run's rebuild left untagged (on a
            # private engine only: a user's engine is theirs to prune).
            dangling = s.docker("images", "-q", "--filter", "dangling=true").stdout.split()
            if len(dangling) > 6:  # about a minute's work, so not on every run
                s.docker("container", "prune", "-f", check=False)
                s.docker("image", "prune", "-f", check=False)
        # Back as this session found it: started again if it was running before the session
        # (compose tests run last, so no lab test of this session needs it after them).
        if lab_was_running and LAB_AT_SESSION_START.get("running"):
            lab.up()
    volumes = s.docker("volume", "ls", "-q", "--filter", f"name={s.env['COMPOSE_PROJECT_NAME']}_")
    assert not volumes.stdout.strip(), f"down -v left volumes: {volumes.stdout}"


def test_calls_through_the_stack_reach_the_handsets_and_the_database(stack: Stack) -> None:
    t0 = time.monotonic()
    placed = stack.call("queue_answered")
    assert placed == [{"scenario": "queue_answered", "did": "18005550100", "sipp_rc": 0}]

    def support_delivered() -> list[dict[str, Any]]:
        rows = [r for r in stack.messages() if r["rule"] == "support-followup"]
        return rows if rows and all(r["state"] == "delivered" for r in rows) else []

    rows = stack.wait_for("the support call's SMS delivered", support_delivered)
    FIGURES["first call: SIPp call placed until its SMS is delivered"] = (
        f"{time.monotonic() - t0:.1f}s")
    assert len(rows) == 1
    call = stack.calls()[rows[0]["call_id"]]
    ticket = call["vars"]["TICKET"]
    assert call["queue"] == "Support" and call["disposition"] == "answered"
    texts = _to(stack.handsets(), SUPPORT_CALLER)
    assert texts == [rows[0]["text"]]
    m = TICKET_TEXT.fullmatch(texts[0])
    assert m, texts[0]
    assert m.group(1) == ticket

    stack.call("queue_abandoned")
    sorry = stack.wait_for(
        "the abandoned call's SMS delivered",
        lambda: [r for r in stack.messages()
                 if r["rule"] == "missed-call-sorry" and r["state"] == "delivered"])
    assert [r["text"] for r in sorry] == [SORRY_TEXT]
    assert stack.calls()[sorry[0]["call_id"]]["disposition"] == "abandoned"
    assert _to(stack.handsets(), ABANDONED_CALLER) == [SORRY_TEXT]
    # The agent summary of the answered call went to Priya's mobile, and was delivered too.
    summaries = stack.wait_for(
        "the agent summary delivered",
        lambda: [r for r in stack.messages()
                 if r["rule"] == "agent-summary" and r["state"] == "delivered"])
    assert _to(stack.handsets(), PRIYA) == [r["text"] for r in summaries]


def test_calls_back_to_back_each_hang_up_and_complete(stack: Stack) -> None:
    # Each `run` of sipp-caller is a new container in which SIPp has the same pid; Asterisk's
    # PJSIP remembers a finished transaction for 32 s. Calls placed within that time of each
    # other must still be distinct calls to Asterisk: each hangs up and is texted once.
    before = len([r for r in stack.messages() if r["rule"] == "support-followup"])
    for _ in range(3):
        assert stack.call("queue_answered") == [
            {"scenario": "queue_answered", "did": "18005550100", "sipp_rc": 0}]
    stack.wait_for(
        "three back-to-back support calls' SMS delivered",
        lambda: len([r for r in stack.messages()
                     if r["rule"] == "support-followup" and r["state"] == "delivered"])
        >= before + 3)
    assert stack.asterisk_calls() == 0


def test_a_crashed_agent_comes_back_and_texts_once_per_call(stack: Stack) -> None:
    if not engine_is_local(stack.engine):
        pytest.fail("the crash is made by killing the agent's process on this machine: "
                    "run the compose tests as root against a local engine")
    before = stack.messages()
    cid = stack.container("agent")
    state = stack.inspect(cid)["State"]
    restarts = stack.inspect(cid)["RestartCount"]
    # A crash, as the kernel's OOM killer makes one: SIGKILL to the agent's process. (`docker
    # kill` would not do: Docker counts it as a manual stop, to which no restart policy applies.)
    os.kill(state["Pid"], signal.SIGKILL)
    FIGURES["agent crash"] = f"killed pid {state['Pid']}"
    stack.wait_for("the restart policy restarting the agent",
                   lambda: stack.inspect(cid)["RestartCount"] > restarts)
    stack.wait_healthy()
    assert stack.inspect(cid)["State"]["Pid"] != state["Pid"]

    assert stack.call("queue_answered") == [
        {"scenario": "queue_answered", "did": "18005550100", "sipp_rc": 0}]
    stack.wait_for(
        "the second support call's SMS delivered",
        lambda: len([r for r in stack.messages()
                     if r["rule"] == "support-followup" and r["state"] == "delivered"])
        >= 1 + len([r for r in before if r["rule"] == "support-followup"]))
    def all_delivered() -> list[dict[str, Any]]:
        rows = stack.messages()
        return rows if all(r["state"] == "delivered" for r in rows) else []

    rows = stack.wait_for("every message delivered", all_delivered)
    # Exactly one SMS per call, rule and recipient: the database's rows, and the handsets agree.
    keys = Counter((r["call_id"], r["rule"], r["recipient_kind"]) for r in rows)
    assert all(n == 1 for n in keys.values()), keys
    handsets = stack.handsets()
    assert sorted((_digits(m["dest"]), m["text"]) for m in handsets) == sorted(
        (_digits(r["number"]), r["text"]) for r in rows)
    tickets = [TICKET_TEXT.fullmatch(t) for t in _to(handsets, SUPPORT_CALLER)]
    # One ticket text per answered support call, each with its own ticket.
    assert all(tickets) and len({t.group(1) for t in tickets if t}) == len(tickets)
    assert len(tickets) == 1 + len([r for r in before if r["rule"] == "support-followup"])
    assert stack.asterisk_calls() == 0


def test_images_run_unprivileged_and_hold_no_secret(stack: Stack) -> None:
    sizes = {name: int(stack.inspect(tag)["Size"]) for name, tag in IMAGES.items()}
    FIGURES["image sizes"] = ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in sizes.items())
    # The agent and simulator image and the SIPp image run as their own users from the image
    # config (what `docker run` and orchestrators see); Asterisk's entrypoint starts as root
    # to write the secret include, and Asterisk runs as asterisk.
    assert stack.inspect(IMAGES["sipp"])["Config"]["User"] == "sipp"
    assert stack.inspect(IMAGES["agent"])["Config"]["User"] == "10001:10001"
    for service in ("agent", "smsc-sim"):
        user = stack.inspect(stack.container(service))["Config"]["User"]
        assert user.split(":")[0] not in ("", "0", "root"), f"{service} runs as {user!r}"
    if engine_is_local(stack.engine):
        for service in ("agent", "smsc-sim", "asterisk", "sipp-agents"):
            pid = stack.inspect(stack.container(service))["State"]["Pid"]
            assert main_pid_uid(pid) != 0, f"{service}'s main process runs as root"
    ids = stack.compose("exec", "-T", "agent", "id", "-u", "aftercall").stdout.strip()
    assert ids == "10001"

    values = stack.figures["secrets"]
    lab_secret = Lab().secret_file
    if lab_secret.is_file():
        values = {**values, "lab AMI secret": lab_secret.read_text().strip()}
    for name in ("ami_secret", "smpp_password"):
        mine = REPO / "docker/secrets" / name
        if mine.is_file() and (v := mine.read_text().strip()):
            values[f"docker/secrets/{name}"] = v
    # Containers: secrets arrive as files under /run/secrets, never as environment values.
    for service in ("asterisk", "smsc-sim", "agent"):
        info = stack.inspect(stack.container(service))
        env = "\n".join(info["Config"]["Env"])
        assert not [k for k, v in values.items() if v in env], f"{service}: a secret in its env"
        targets = {m["Destination"] for m in info["Mounts"]}
        assert targets & {"/run/secrets/ami_secret", "/run/secrets/smpp_password"}, service
    # Images: no secret value and no secret file in any layer, the history or the config.
    for tag in IMAGES.values():
        meta = stack.docker("history", "--no-trunc", tag).stdout + json.dumps(stack.inspect(tag))
        found = _scan_image(stack, tag, [v.encode() for v in values.values()])
        leaked = [k for k, v in values.items() if v in meta or v.encode() in found["values"]]
        assert not leaked, f"{tag}: {leaked} baked into the image"
        assert not found["files"], f"{tag}: secret files in its layers: {found['files']}"


def _scan_image(stack: Stack, tag: str, values: list[bytes]) -> dict[str, set[Any]]:
    """Every layer of ``docker save``: secret values in file contents, secret-looking files."""
    proc = subprocess.Popen([stack.engine.client, "save", tag], env=stack.engine.env,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    hits: set[bytes] = set()
    files: set[str] = set()
    secret_names = re.compile(r"(^|/)(ami_secret|smpp_password|aftercall_secret\.conf)$")
    with tarfile.open(fileobj=proc.stdout, mode="r|") as outer:
        for member in outer:
            if not member.name.endswith("layer.tar"):
                continue
            layer = outer.extractfile(member)
            assert layer is not None
            with tarfile.open(fileobj=io.BufferedReader(layer), mode="r|") as inner:  # type: ignore[arg-type]
                for f in inner:
                    if secret_names.search(f.name) and not f.name.endswith(".example"):
                        files.add(f.name)
                    if f.isfile() and 0 < f.size < 50_000_000:
                        data = inner.extractfile(f).read()  # type: ignore[union-attr]
                        hits.update(v for v in values if v in data)
    assert proc.wait() == 0, f"docker save {tag} failed"
    return {"values": hits, "files": files}


def test_every_metric_the_dashboard_queries_is_exposed(stack: Stack) -> None:
    exposed = exposed_names(stack.metrics())
    queried = queried_metrics(json.loads(DASHBOARD.read_text()))
    assert queried, f"{DASHBOARD.name} queries no aftercall metric"
    missing = sorted(queried - exposed)
    assert not missing, f"{DASHBOARD.name} queries metrics the running agent lacks: {missing}"
