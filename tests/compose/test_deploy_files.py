"""deploy/: the systemd unit (systemd-analyze verify and its security exposure), the Prometheus
scrape example and the Grafana dashboard against the agent's metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from promtext import exposed_names, queried_metrics

from agent.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy/systemd/aftercall.service"
DASHBOARD = REPO / "deploy/grafana/aftercall-dashboard.json"
PROMETHEUS = REPO / "deploy/prometheus/prometheus.yml"
#: systemd-analyze security's scale: 0 (locked down) to 10 (UNSAFE); "OK" ends at 2.9.
MAX_EXPOSURE = 2.0


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (`make test` does)")
    return exe


def _unit() -> dict[str, list[str]]:
    """The unit's settings: key -> values (keys repeat), comments dropped."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    shutil.copy(UNIT, unit)
    r = subprocess.run([_systemd_analyze(), "verify", "--man=no", str(unit)], check=False,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr.strip()) == (0, ""), r.stderr


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    shutil.copy(UNIT, unit)
    r = subprocess.run([_systemd_analyze(), "security", "--offline=yes", str(unit)], check=False,
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout
    s = _unit()
    assert s["User"] == ["aftercall"] and s["ProtectSystem"] == ["strict"]
    assert s["StateDirectory"] == ["aftercall"] and s["Restart"] == ["on-failure"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # SIGHUP: the agent reloads its rules
    # Secrets come as credentials; the unit's own environment names files, never values.
    creds = {v.split(":", 1)[0] for v in s["LoadCredential"]}
    assert creds == {"ami_secret", "smpp_password"}
    for value in s["Environment"]:
        key = value.split("=", 1)[0]
        if re.search(r"SECRET|PASSWORD|TOKEN", key):
            assert key.endswith("_FILE") and "%d/" in value, value
    assert "$CREDENTIALS_DIRECTORY/smpp_password" in s["ExecStart"][0]
    assert s["ExecStart"][0].rstrip("'").endswith("exec /opt/aftercall/bin/aftercall run")
    sysusers = (REPO / "deploy/systemd/aftercall.sysusers.conf").read_text()
    assert re.search(r"^u\s+aftercall\s", sysusers, re.MULTILINE)


def test_the_dashboard_queries_only_metrics_the_agent_has() -> None:
    body, _ = Metrics().render()
    exposed = exposed_names(body.decode())
    queried = queried_metrics(json.loads(DASHBOARD.read_text()))
    assert len(queried) >= 8, queried
    assert not sorted(queried - exposed), f"unknown metrics: {sorted(queried - exposed)}"


def test_prometheus_scrapes_the_address_the_agent_serves() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    job = {j["job_name"]: j for j in config["scrape_configs"]}["aftercall"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    http = compose["services"]["agent"]["environment"]["AFTERCALL_HTTP"]
    unit_http = [v.split("=", 1)[1] for v in _unit()["Environment"]
                 if v.startswith("AFTERCALL_HTTP=")]
    assert targets == [http] == unit_http
