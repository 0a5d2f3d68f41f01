"""The compose project under test: compose commands, health, the agent's database, the
simulator's handsets. Used by tests/compose/ (not shipped)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from agent.lab.procs import port_free

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
#: Not the README's `aftercall`: `down -v` here must never drop a user's own volumes.
PROJECT = "aftercall-test"
SIM_CONTROL = "http://127.0.0.1:13013"
AGENT_HTTP = "http://127.0.0.1:8080"
#: What the stack listens on (host network, as the lab): all must be free before `up`.
PORTS = {"AMI": ("tcp", 5038), "PJSIP": ("udp", 5060), "SMPP": ("tcp", 2775),
         "simulator HTTP": ("tcp", 13013), "agent HTTP": ("tcp", 8080),
         **{f"phone {p}": ("udp", p) for p in (5071, 5072, 5073, 5078, 5079)}}
#: The services `up` starts (sipp-caller is in the `calls` profile: `run` only).
SERVICES = {"asterisk", "smsc-sim", "agent", "sipp-agents"}
#: Whether the lab was running when the test session started (set by conftest.py).
LAB_AT_SESSION_START: dict[str, bool] = {}
#: Figures the compose tests measured, printed at the end of the run (build, first call, sizes).
FIGURES: dict[str, Any] = {}


def _load(name: str, path: Path) -> ModuleType:
    """A script of docker/ (not a package module) as a module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_engine() -> ModuleType:
    """docker/engine.py as a module."""
    return _load("aftercall_docker_engine", REPO / "docker" / "engine.py")


def load_compose_v2() -> ModuleType:
    """docker/compose_v2.py (Debian's Compose v2, fetched once) as a module."""
    return _load("aftercall_docker_compose_v2", REPO / "docker" / "compose_v2.py")


def compose_command() -> list[str]:
    """What runs the compose file: ``AFTERCALL_COMPOSE`` when set (`v2`: Debian's Compose v2,
    fetched once by docker/compose_v2.py; or a command line such as `docker compose`), else
    Debian's docker-compose (v1), else the compose plugin (v2). The file works with both."""
    chosen = os.environ.get("AFTERCALL_COMPOSE", "")
    if chosen == "v2":
        return [str(load_compose_v2().compose_v2())]
    if chosen.split():
        return chosen.split()
    if (exe := shutil.which("docker-compose")) is not None:
        return [exe]
    return ["docker", "compose"]


def compose_env() -> dict[str, str]:
    """What the chosen compose needs in its environment: Debian's v2 finds docker-buildx (its
    builder) in the plugin directory it was fetched into."""
    if os.environ.get("AFTERCALL_COMPOSE", "") == "v2":
        return {"DOCKER_CONFIG": str(load_compose_v2().CONFIG_DIR)}
    return {}


def port_holders() -> list[str]:
    return [f"{name} {port}/{proto}" for name, (proto, port) in PORTS.items()
            if not port_free(proto, port)]


@dataclass
class Stack:
    engine: Any  # docker/engine.py's Engine
    env: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, engine: Any, variables: dict[str, str]) -> Stack:
        env = {k: v for k, v in engine.env.items() if not k.startswith("COMPOSE_")}
        # BuildKit, through the docker client (Debian's first on PATH): the legacy builder commits
        # a layer copy per instruction, which the vfs storage of a private engine makes slow.
        env |= {"COMPOSE_PROJECT_NAME": PROJECT, "COMPOSE_DOCKER_CLI_BUILD": "1",
                "DOCKER_BUILDKIT": "1", **compose_env(), **variables,
                "PATH": f"{Path(engine.client).parent}:{env.get('PATH', '/usr/bin:/bin')}"}
        return cls(engine=engine, env=env)

    def compose(self, *args: str, check: bool = True,
                timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        cmd = [*compose_command(), "-f", str(COMPOSE_FILE), "-p", PROJECT, *args]
        r = subprocess.run(cmd, cwd=REPO, env=self.env, check=False, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[-len(args) - 2:])} exited {r.returncode}:\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.engine.run(*args, check=check)  # type: ignore[no-any-return]

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        assert cid, f"service {service} has no container"
        return cid

    def inspect(self, ref: str) -> dict[str, Any]:
        return json.loads(self.docker("inspect", ref).stdout)[0]  # type: ignore[no-any-return]

    def health(self) -> dict[str, str]:
        """service -> health status (or the state, for a service without a healthcheck), for
        the project's long-running containers (not `run`'s one-off ones)."""
        out = {}
        for cid in self.compose("ps", "-q").stdout.split():
            info = self.inspect(cid)
            labels = info["Config"]["Labels"]
            if labels.get("com.docker.compose.oneoff") == "True":
                continue
            state = info["State"]
            out[labels["com.docker.compose.service"]] = (
                state.get("Health", {}).get("Status") or state["Status"])
        return out

    def wait_healthy(self, timeout: float = 180) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if set(health) == SERVICES and all(s in ("healthy", "running") for s in health.values()):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy within {timeout:.0f}s: {health}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", *services, check=False).stdout

    def call(self, *scenarios: str) -> list[dict[str, Any]]:
        """Place the named demo calls with the compose sipp-caller service; their JSON lines."""
        r = self.compose("--profile", "calls", "run", "--rm", "-T", "sipp-caller", *scenarios,
                         check=False)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        assert r.returncode == 0 and len(lines) == len(scenarios), (
            f"sipp-caller exited {r.returncode}:\n{r.stdout}\n{r.stderr[-2000:]}")
        return lines

    def asterisk_calls(self) -> int:
        """Calls Asterisk itself holds up (`core show channels count`)."""
        out = self.compose("exec", "-T", "asterisk", "asterisk", "-rx",
                           "core show channels count").stdout
        m = re.search(r"^(\d+) active calls?$", out, re.M)
        assert m, f"core show channels count said: {out!r}"
        return int(m.group(1))

    def db(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a query on the agent's database, read inside the agent container from its
        volume (as the agent's user, so no file of the database ends up owned by root)."""
        code = ("import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=10); "
                "c.row_factory = sqlite3.Row; "
                "print(json.dumps([dict(r) for r in c.execute(sys.argv[2])]))")
        r = self.compose("exec", "-T", "--user", "aftercall", "agent", "python", "-c", code,
                         "/var/lib/aftercall/aftercall.db", sql)
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    def messages(self) -> list[dict[str, Any]]:
        return self.db("SELECT call_id, rule, recipient_kind, number, text, state "
                       "FROM messages ORDER BY created_at")

    def calls(self) -> dict[str, dict[str, Any]]:
        # The stored record leaves out what the row's columns hold and is deflated: read back
        # whole by the store's own code (agent/store/packing.py), in the agent container.
        code = ("import json, sqlite3, sys; from agent.store.packing import unpack_record; "
                "c = sqlite3.connect(sys.argv[1], timeout=10); c.row_factory = sqlite3.Row; "
                "print(json.dumps({r['call_id']: unpack_record(r, r['record'])"
                " for r in c.execute('SELECT * FROM calls')}))")
        r = self.compose("exec", "-T", "--user", "aftercall", "agent", "python", "-c", code,
                         "/var/lib/aftercall/aftercall.db")
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    def handsets(self) -> list[dict[str, Any]]:
        """Every message the simulator delivered to a handset (its control API)."""
        with urllib.request.urlopen(f"{SIM_CONTROL}/sim/messages", timeout=5) as resp:
            return json.load(resp)["messages"]  # type: ignore[no-any-return]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{AGENT_HTTP}/metrics", timeout=5) as resp:
            return resp.read().decode()  # type: ignore[no-any-return]

    def wait_for(self, what: str, predicate: Any, timeout: float = 60) -> Any:
        """Poll ``predicate()`` until it returns something true; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                live = [line for line in self.metrics().splitlines()
                        if line.startswith(("aftercall_ami", "aftercall_records", "aftercall_calls"))]
                raise AssertionError(f"{what}: not within {timeout:.0f}s\n"
                                     f"rows: {self.messages()}\n{self.logs('agent')}\n"
                                     + "\n".join(live))
            time.sleep(0.25)


def main_pid_uid(pid: int) -> int:
    """The real uid of a process of this machine's engine (its /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no Uid line")


def engine_is_local(engine: Any) -> bool:
    return str(engine.host).startswith("unix://") and os.geteuid() == 0
