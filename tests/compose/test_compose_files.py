"""docker/ checked without a Docker engine: compose validity, image inputs, ports, secrets."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from agent.lab import lab as lab_module
from agent.lab import record, sipp

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
SERVICES = {"asterisk", "smsc-sim", "agent", "sipp-agents", "sipp-caller"}
SECRETS_DIR = DOCKER / "secrets"
# Files under docker/secrets/ that may be committed.
COMMITTABLE_SECRETS = {"README.md", ".gitignore"}


# -- helpers ---------------------------------------------------------------------------------------
def _compose_command() -> list[str]:
    if chosen := os.environ.get("AFTERCALL_COMPOSE", "").split():
        return chosen
    if (exe := shutil.which("docker-compose")) is not None:
        return [exe]
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], check=False,
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed: "
                "apt-get install docker-compose (`make test` does)")


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run([*_compose_command(), "-f", str(COMPOSE), *args], cwd=REPO, env=env,
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, paths absolute)."""
    # --profile calls: Compose v2 leaves out the services of profiles not enabled (v1 does not).
    r = _compose("--profile", "calls", "config")
    assert r.returncode == 0, f"docker-compose config failed:\n{r.stderr}"
    return yaml.safe_load(r.stdout)  # type: ignore[no-any-return]


def _service(config: dict[str, Any], name: str) -> dict[str, Any]:
    return config["services"][name]  # type: ignore[no-any-return]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read_only), for short or long volume syntax."""
    out: dict[str, tuple[str, bool]] = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            out[target] = (source, bool(mode) and "ro" in mode[0].split(","))
        else:
            out[v["target"]] = (v.get("source", ""), bool(v.get("read_only")))
    return out


def _asterisk_conf(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections of an asterisk_conf/ file: section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (REPO / "asterisk_conf" / name).read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if m := re.fullmatch(r"\[([^\]]+)\].*", line):
            current = sections.setdefault(m.group(1), {})
            continue
        key, sep, value = line.partition("=")
        if sep:
            current.setdefault(key.strip(), []).append(value.lstrip(">").strip())
    return sections


def _dockerfiles() -> list[Path]:
    found = sorted(DOCKER.glob("*/Dockerfile"))
    assert found, "no docker/*/Dockerfile"
    return found


def _instructions(dockerfile: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined."""
    start, buf = 0, ""
    for n, raw in enumerate(dockerfile.read_text().splitlines(), 1):
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if not buf:
            start = n
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        buf += raw
        word, _, rest = buf.strip().partition(" ")
        yield start, word.upper(), rest.strip()
        buf = ""


def _script_table(script: Path, variable: str) -> list[list[str]]:
    """Rows of the whitespace-separated table a shell script keeps in ``VARIABLE="..."``."""
    m = re.search(rf'^{variable}="\n(.*?)^"', script.read_text(), re.DOTALL | re.MULTILINE)
    assert m, f"{script.relative_to(REPO)}: no {variable}=\"...\" table"
    return [line.split() for line in m.group(1).splitlines() if line.strip()]


# -- the compose file ------------------------------------------------------------------------------
def test_compose_file_is_valid() -> None:
    r = _compose("config", "-q")
    assert r.returncode == 0, f"docker-compose config -q exited {r.returncode}:\n{r.stderr}"


def test_services_and_profiles(config: dict[str, Any]) -> None:
    assert set(config["services"]) == SERVICES
    for name, svc in config["services"].items():
        expected = ["calls"] if name == "sipp-caller" else None
        assert svc.get("profiles") == expected, name


def _essentials(config: dict[str, Any]) -> dict[str, Any]:
    """What each service is, in a form both Compose versions' `config` output reduce to (v1
    prints short syntax and lists, v2 long syntax and maps)."""

    def mount(v: Any) -> tuple[str, bool]:
        if isinstance(v, str):
            parts = v.split(":")
            return parts[1], parts[2:] == ["ro"]
        return v["target"], bool(v.get("read_only"))

    out: dict[str, Any] = {}
    for name, svc in config["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        build = svc.get("build") or {}
        out[name] = {
            "image": svc.get("image"), "network_mode": svc.get("network_mode"),
            "restart": svc.get("restart"), "profiles": svc.get("profiles"),
            "command": svc.get("command") or None, "entrypoint": svc.get("entrypoint") or None,
            "environment": {k: str(v) for k, v in env.items()},
            "depends_on": {k: v.get("condition") for k, v in deps.items()},
            "healthcheck": (svc.get("healthcheck") or {}).get("test"),
            "secrets": sorted(x if isinstance(x, str) else x["source"]
                              for x in svc.get("secrets") or []),
            "mounts": sorted(mount(v) for v in svc.get("volumes") or []),
            "build": (Path(build["context"]).resolve(), build.get("dockerfile"),
                      build.get("args"), build.get("network")) if build else None,
        }
    out["secret files"] = {k: v["file"] for k, v in config["secrets"].items()}
    return out


def test_compose_v2_reads_the_file_as_v1_does(config: dict[str, Any]) -> None:
    # Debian bookworm has Compose v1 only; v2 is sid's docker-compose 2.x, fetched once
    # (docker/compose_v2.py). The stack tests run on one of them (AFTERCALL_COMPOSE=v2 picks
    # v2); this holds the other to the same reading of the file.
    from compose_stack import load_compose_v2

    module = load_compose_v2()
    v2 = str(module.compose_v2())
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    r = subprocess.run([v2, "-f", str(COMPOSE), "--profile", "calls", "config"], cwd=REPO,
                       env=env | {"DOCKER_CONFIG": str(module.CONFIG_DIR)}, check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"Compose v2 ({module.version(Path(v2))}) refused the file:\n{r.stderr}"
    assert _essentials(yaml.safe_load(r.stdout)) == _essentials(config)


def test_every_service_is_on_the_host_network(config: dict[str, Any]) -> None:
    # asterisk_conf binds 127.0.0.1 and permits AMI from 127.0.0.1 only: see docker/README.md.
    for name, svc in config["services"].items():
        assert svc.get("network_mode") == "host", f"{name}: network_mode must be host"
        assert not svc.get("ports"), f"{name}: `ports` means nothing with the host network"


def test_builds_use_the_repository_as_context(config: dict[str, Any]) -> None:
    for name, svc in config["services"].items():
        build = svc["build"]
        assert Path(build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"


def test_healthchecks(config: dict[str, Any]) -> None:
    ast = " ".join(_service(config, "asterisk")["healthcheck"]["test"])
    assert "asterisk -rx" in ast and "core show uptime" in ast
    agent = _service(config, "agent")
    http = _environment(agent)["AFTERCALL_HTTP"]
    assert f"http://{http}/healthz" in " ".join(agent["healthcheck"]["test"])
    sim = " ".join(_service(config, "smsc-sim")["healthcheck"]["test"])
    assert "('127.0.0.1', 2775)" in sim


# -- images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.parent.name)
def test_copy_sources_exist_and_are_sent_to_the_builder(dockerfile: Path) -> None:
    ignore = dockerfile.with_name("Dockerfile.dockerignore")
    included = [line[1:].strip().rstrip("/") for line in ignore.read_text().splitlines()
                if line.startswith("!")]
    copies = 0
    for n, word, rest in _instructions(dockerfile):
        if word not in ("COPY", "ADD"):
            continue
        args = [a for a in shlex.split(rest) if not a.startswith("--")]
        if any(a.startswith("--from") for a in shlex.split(rest)):
            continue
        where = f"{dockerfile.relative_to(REPO)}:{n}"
        assert len(args) >= 2, f"{where}: {word} needs a source and a destination"
        for src in args[:-1]:
            src = src.rstrip("/")
            assert (REPO / src).exists(), f"{where}: {word} source {src} is not in the repository"
            assert any(src == inc or src.startswith(inc + "/") for inc in included), (
                f"{where}: {src} is excluded by {ignore.relative_to(REPO)}")
            copies += 1
    assert copies, f"{dockerfile.relative_to(REPO)} copies nothing from the repository"


def test_asterisk_image_keeps_the_labs_stock_files() -> None:
    text = (DOCKER / "asterisk/Dockerfile").read_text()
    m = re.search(r'STOCK_FILES="([^"]*)"', text)
    assert m, "docker/asterisk/Dockerfile: no STOCK_FILES"
    assert tuple(m.group(1).split()) == lab_module.STOCK_FILES
    assert re.search(r"^ARG BASE_IMAGE=debian:sid-slim\nFROM \$\{BASE_IMAGE\}$", text, re.MULTILINE)
    assert "COPY asterisk_conf/ /etc/asterisk/" in text


def test_agent_image_installs_the_project() -> None:
    text = (DOCKER / "agent/Dockerfile").read_text()
    # Debian's Python (bookworm: 3.11), so no image from outside Debian is needed.
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim\nFROM \$\{BASE_IMAGE\}$", text,
                     re.MULTILINE)
    assert "python3 python3-venv" in text
    assert "pip install --no-deps --no-build-isolation /src" in text


@pytest.mark.parametrize("name", ["agent", "sipp"])
def test_images_run_as_a_non_root_user_from_their_config(name: str) -> None:
    # The image's own config says who runs it (what `docker run`, an orchestrator's
    # runAsNonRoot and a reader of `docker inspect` see), not only an entrypoint that drops.
    users = [args for _, word, args in _instructions(DOCKER / name / "Dockerfile")
             if word == "USER"]
    assert users, f"docker/{name}/Dockerfile sets no USER"
    assert users[-1].split(":")[0] not in ("0", "root"), users[-1]


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.parent.name)
def test_every_image_builds_on_a_base_given_as_a_build_argument(
    dockerfile: Path, config: dict[str, Any]
) -> None:
    """Without a registry, `make images-base` provides the bases (docker/engine.py); compose
    passes them as BASE_IMAGE, defaulting to the public Debian image the Dockerfile names."""
    text = dockerfile.read_text()
    m = re.search(r"^ARG BASE_IMAGE=(debian:\S+)\nFROM \$\{BASE_IMAGE\}$", text, re.MULTILINE)
    assert m, f"{dockerfile.relative_to(REPO)}: no ARG BASE_IMAGE before FROM"
    suites = {"debian:bookworm-slim": "AFTERCALL_BASE_BOOKWORM", "debian:sid-slim": "AFTERCALL_BASE_SID"}
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, svc in config["services"].items():
        if svc["build"]["dockerfile"] == str(dockerfile.relative_to(REPO)):
            arg = svc["build"]["args"]["BASE_IMAGE"]
            assert arg == m.group(1), f"{name}: BASE_IMAGE {arg} without variables set"
            assert svc["build"]["network"] == "host", name
            spec = raw["services"][name]["build"]  # YAML merge keys resolved by the loader
            assert spec["args"]["BASE_IMAGE"] == f"${{{suites[arg]}:-{arg}}}", name


@pytest.mark.parametrize("script", ["asterisk/entrypoint.sh", "agent/entrypoint.sh",
                                    "sipp/agents.sh", "sipp/caller.sh"])
def test_scripts_parse(script: str) -> None:
    path = DOCKER / script
    shell = path.read_text().splitlines()[0].removeprefix("#!")
    assert shell in ("/bin/sh", "/bin/bash"), f"{script}: unexpected interpreter {shell}"
    r = subprocess.run([shell, "-n", str(path)], check=False, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, f"{script}: {r.stderr}"


# -- ports and addresses against asterisk_conf/, rules.yaml and the lab ---------------------------
def test_ami_address_matches_manager_conf(config: dict[str, Any]) -> None:
    manager = _asterisk_conf("manager.conf")
    env = _environment(_service(config, "agent"))
    assert env["AFTERCALL_AMI_HOST"] == manager["general"]["bindaddr"][0] == "127.0.0.1"
    assert env["AFTERCALL_AMI_PORT"] == manager["general"]["port"][0] == "5038"
    assert env["AFTERCALL_AMI_USER"] in manager
    assert lab_module.PORTS["AMI"] == ("tcp", 5038)


def test_sip_address_matches_pjsip_conf() -> None:
    bind = _asterisk_conf("pjsip.conf")["transport-udp"]["bind"][0]
    assert bind == sipp.ASTERISK == "127.0.0.1:5060"
    assert lab_module.PORTS["PJSIP"] == ("udp", 5060)
    assert f'asterisk="${{ASTERISK:-{bind}}}"' in (DOCKER / "sipp/caller.sh").read_text()


def test_agent_phones_match_the_lab_and_pjsip_conf() -> None:
    rows = _script_table(DOCKER / "sipp/agents.sh", "PHONES")
    phones = {ext: (int(port), scenario) for ext, port, scenario in rows}
    assert phones == sipp.PHONES
    pjsip = _asterisk_conf("pjsip.conf")
    for ext, (port, scenario) in phones.items():
        assert pjsip[ext]["contact"] == [f"sip:{ext}@127.0.0.1:{port}"], ext
        assert (REPO / "agent/lab/sipp" / scenario).is_file(), scenario


def test_demo_calls_match_the_lab_scenarios() -> None:
    rows = _script_table(DOCKER / "sipp/caller.sh", "CALLS")
    calls = [record.Scenario(name, scenario, did, int(ms), anonymous == "yes", caller)
             for name, scenario, did, ms, caller, anonymous in rows]
    assert calls == record.SCENARIOS
    dialplan = (REPO / "asterisk_conf/extensions.conf").read_text()
    for call in calls:
        assert f"[did-{call.did}]" in dialplan, call.did
        assert (REPO / "agent/lab/sipp" / call.caller_scenario).is_file()


def test_smsc_sim_ports_match_rules_gateways(config: dict[str, Any]) -> None:
    from agent.commands.smsc_sim import configure_parser

    command = _service(config, "smsc-sim")["command"]
    assert command[:2] == ["aftercall", "smsc-sim"]
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(command[2:])
    # rules.yaml as the agent container reads it: no SMPP_PORT/SIM_HTTP_PORT set there.
    from agent.rules.loader import load_rules

    env = {"SMPP_PASSWORD": "x", "KANNEL_PASSWORD": "x"}
    gateways = load_rules(REPO / "rules.yaml", env=env).config.gateways
    smpp = next(g for g in gateways.values() if g.type == "smpp")
    http = next(g for g in gateways.values() if g.type == "http")
    assert (args.smpp_host, args.smpp_port) == (smpp.host, smpp.port) == ("127.0.0.1", 2775)
    url = urlparse(http.url)
    assert (args.http_host, args.http_port) == (url.hostname, url.port) == ("127.0.0.1", 13013)
    assert args.password_env == "AFTERCALL_SIM_PASSWORD"
    assert "AFTERCALL_SIM_PASSWORD_FILE" in _environment(_service(config, "smsc-sim"))


@pytest.mark.parametrize("service", ["agent", "smsc-sim"])
def test_the_aftercall_command_accepts_the_compose_command(
    config: dict[str, Any], service: str
) -> None:
    from agent.cli import build_parser

    command = _service(config, service)["command"]
    assert command[0] == "aftercall"
    try:
        args = build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"{service}: `{' '.join(command)}` is refused by agent/cli.py")
    assert args.command == command[1]


def test_agent_settings_come_from_its_environment(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.settings import Settings

    agent = _service(config, "agent")
    assert agent["command"] == ["aftercall", "run"]
    env = _environment(agent)
    sources = "\n".join(p.read_text() for p in (REPO / "agent").rglob("*.py"))
    for key in env:
        if key.startswith("AFTERCALL_"):
            assert f'"{key.removeprefix("AFTERCALL_")}"' in sources or key in sources, (
                f"agent environment {key} is read nowhere in agent/")
    for key in list(os.environ):
        if key.startswith("AFTERCALL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key != "AFTERCALL_AMI_SECRET_FILE":  # the file exists only in the container
            monkeypatch.setenv(key, value)
    settings = Settings.from_args(argparse.Namespace())
    mounts = _mounts(agent)
    assert mounts[str(settings.rules)] == (str(REPO / "rules.yaml"), True)
    assert str(settings.db.parent) in mounts and not mounts[str(settings.db.parent)][1]
    assert settings.cdr_csv is not None and settings.cdr_csv.name == "Master.csv"
    assert mounts[str(settings.cdr_csv.parent)][1], "the agent must mount the CDRs read-only"
    # The same named volume is where Asterisk writes Master.csv (the lab's cdr_csv path).
    cdr_volume = mounts[str(settings.cdr_csv.parent)][0]
    asterisk_mounts = _mounts(_service(config, "asterisk"))
    lab_cdr_dir = "/" + str(lab_module.Lab().cdr_csv.relative_to(lab_module.Lab().root).parent)
    assert asterisk_mounts[lab_cdr_dir][0] == cdr_volume
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)


# -- secrets ---------------------------------------------------------------------------------------
def _git_ignored(path: Path) -> bool:
    r = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False)
    assert r.returncode in (0, 1), f"git check-ignore failed for {path} (exit {r.returncode})"
    return r.returncode == 0


def test_secrets_come_from_files_and_none_is_committed(config: dict[str, Any]) -> None:
    declared = config["secrets"]
    assert set(declared) == {"ami_secret", "smpp_password"}
    for name, spec in declared.items():
        path = Path(spec["file"])
        assert path.parent == SECRETS_DIR, name
        assert (SECRETS_DIR / f"{name}.example").is_file(), f"{name}.example missing"
        assert _git_ignored(path), f"{path.relative_to(REPO)} is not git-ignored"
    for f in SECRETS_DIR.iterdir():
        if f.name in COMMITTABLE_SECRETS or f.name.endswith(".example"):
            continue
        assert _git_ignored(f), f"{f.relative_to(REPO)} would be committed"
    # Secret values never sit in the compose file: only *_FILE pointers to declared secrets.
    for name, svc in config["services"].items():
        for key, value in _environment(svc).items():
            if re.search(r"SECRET|PASSWORD|TOKEN", key):
                assert key.endswith("_FILE"), f"{name}: {key} holds a value, not a file"
                secret = value.removeprefix("/run/secrets/")
                assert secret in declared and secret in [
                    s["source"] if isinstance(s, dict) else s for s in svc.get("secrets", [])
                ], f"{name}: {key}={value} is not a secret mounted in the service"
    # This machine's lab AMI secret, if any, appears in no file of docker/.
    lab_secret = lab_module.Lab().secret_file
    if lab_secret.is_file() and (value := lab_secret.read_text().strip()):
        for f in DOCKER.rglob("*"):
            if f.is_file():
                assert value not in f.read_text(errors="replace"), f"{f} holds the lab secret"


# -- entrypoints (run for real on this machine, with their test seams) -----------------------------
def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(cmd, env=base | env, check=False, capture_output=True, text=True,
                          timeout=30)


def test_asterisk_entrypoint_writes_the_secret_include(tmp_path: Path) -> None:
    (tmp_path / "etc/asterisk").mkdir(parents=True)
    secret = tmp_path / "ami_secret"
    secret.write_text("Zq3-x_Y9\n")
    include = tmp_path / "etc/asterisk/aftercall_secret.conf"
    r = _run([str(DOCKER / "asterisk/entrypoint.sh"), "cat", str(include)],
             {"ASTERISK_ROOT": str(tmp_path), "AMI_SECRET_FILE": str(secret)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "secret = Zq3-x_Y9\n"
    assert stat.S_IMODE(include.stat().st_mode) == 0o640
    assert (tmp_path / "var/log/asterisk/cdr-csv").is_dir()
    assert (tmp_path / "run/asterisk").is_dir()
    # The environment fallback, when there is no secret file.
    r = _run([str(DOCKER / "asterisk/entrypoint.sh"), "cat", str(include)],
             {"ASTERISK_ROOT": str(tmp_path), "AMI_SECRET_FILE": str(tmp_path / "none"),
              "AMI_SECRET": "from-env"})
    assert (r.returncode, r.stdout) == (0, "secret = from-env\n")


@pytest.mark.parametrize("value", ["", "half;comment", "with space", "tab\there"])
def test_asterisk_entrypoint_refuses_a_secret_asterisk_would_cut(
    tmp_path: Path, value: str
) -> None:
    (tmp_path / "etc/asterisk").mkdir(parents=True)
    secret = tmp_path / "ami_secret"
    secret.write_text(value + "\n")
    r = _run([str(DOCKER / "asterisk/entrypoint.sh"), "true"],
             {"ASTERISK_ROOT": str(tmp_path), "AMI_SECRET_FILE": str(secret)})
    assert r.returncode == 64
    assert str(secret) in r.stderr
    assert not value or value not in r.stderr + r.stdout
    assert not (tmp_path / "etc/asterisk/aftercall_secret.conf").exists()


def test_asterisk_entrypoint_without_any_secret_says_what_to_do(tmp_path: Path) -> None:
    r = _run([str(DOCKER / "asterisk/entrypoint.sh"), "true"],
             {"ASTERISK_ROOT": str(tmp_path), "AMI_SECRET_FILE": str(tmp_path / "none")})
    assert r.returncode == 64
    assert "docker/secrets/ami_secret" in r.stderr


def test_agent_entrypoint_exports_file_secrets(tmp_path: Path) -> None:
    smpp = tmp_path / "smpp_password"
    smpp.write_text("p4ss-word\r\n")
    r = _run([str(DOCKER / "agent/entrypoint.sh"), "env"],
             {"AFTERCALL_RUN_AS": "", "SMPP_PASSWORD_FILE": str(smpp),
              "AFTERCALL_SIM_PASSWORD_FILE": str(smpp)})
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert env["SMPP_PASSWORD"] == env["AFTERCALL_SIM_PASSWORD"] == "p4ss-word"
    assert "SMPP_PASSWORD_FILE" not in env and "AFTERCALL_SIM_PASSWORD_FILE" not in env
    assert "KANNEL_PASSWORD" not in env


def test_agent_entrypoint_names_a_missing_or_empty_secret(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    r = _run([str(DOCKER / "agent/entrypoint.sh"), "true"],
             {"AFTERCALL_RUN_AS": "", "SMPP_PASSWORD_FILE": str(empty)})
    assert (r.returncode, f"SMPP_PASSWORD_FILE={empty} is empty" in r.stderr) == (64, True)
    r = _run([str(DOCKER / "agent/entrypoint.sh"), "true"],
             {"AFTERCALL_RUN_AS": "", "AFTERCALL_AMI_SECRET_FILE": str(tmp_path / "none")})
    assert r.returncode == 64 and "AFTERCALL_AMI_SECRET_FILE" in r.stderr


def test_agent_entrypoint_drops_root_and_hands_over_the_ami_secret() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test runs as root, as `make test` and CI do (it drops to `nobody`)")
    # Not under tmp_path: pytest's base directory is private to root, so `nobody` could not
    # reach the copy.
    work = Path(tempfile.mkdtemp(prefix="aftercall-entrypoint-"))
    try:
        work.chmod(0o755)
        secret = work / "ami_secret"
        secret.write_text("only-root-reads-this\n")
        secret.chmod(0o600)
        data = work / "data"
        data.mkdir()
        r = _run([str(DOCKER / "agent/entrypoint.sh"), "sh", "-c",
                  'id -un; echo "$AFTERCALL_AMI_SECRET_FILE"; cat "$AFTERCALL_AMI_SECRET_FILE"'],
                 {"AFTERCALL_RUN_AS": "nobody", "AFTERCALL_RUNTIME_DIR": str(work / "run"),
                  "AFTERCALL_AMI_SECRET_FILE": str(secret),
                  "AFTERCALL_DB": str(data / "aftercall.db")})
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["nobody", str(work / "run/ami_secret"),
                                         "only-root-reads-this"]
        copy = work / "run/ami_secret"
        assert stat.S_IMODE(copy.stat().st_mode) == 0o400
        assert copy.stat().st_uid == data.stat().st_uid != 0
    finally:
        shutil.rmtree(work)


def test_agent_entrypoint_as_its_user_says_why_a_secret_is_unreadable() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test runs as root, as `make test` and CI do (it runs as `nobody`)")
    work = Path(tempfile.mkdtemp(prefix="aftercall-entrypoint-"))
    try:
        work.chmod(0o755)
        secret = work / "ami_secret"
        secret.write_text("only-root-reads-this\n")
        secret.chmod(0o600)  # a compose file secret as `umask 077` makes it, owned by root
        r = _run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                  str(DOCKER / "agent/entrypoint.sh"), "true"],
                 {"AFTERCALL_AMI_SECRET_FILE": str(secret)})
        assert r.returncode == 64, r.stderr
        assert f"AFTERCALL_AMI_SECRET_FILE={secret} is not readable by uid" in r.stderr
        assert "docker/secrets/README.md" in r.stderr and "only-root" not in r.stderr
        secret.chmod(0o644)  # as docker/secrets/README.md says (the directory private)
        r = _run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                  str(DOCKER / "agent/entrypoint.sh"), "sh", "-c",
                  'id -un; cat "$AFTERCALL_AMI_SECRET_FILE"'],
                 {"AFTERCALL_AMI_SECRET_FILE": str(secret)})
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["nobody", "only-root-reads-this"]
    finally:
        shutil.rmtree(work)
