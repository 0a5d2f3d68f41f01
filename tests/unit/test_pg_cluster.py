"""The throwaway PostgreSQL of the tests: a cluster left by a killed session is reaped."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from agent.lab.postgres import OWNER_FILE, TempCluster, reap_orphans


def test_a_cluster_whose_session_died_is_stopped_and_removed(tmp_path: Path) -> None:
    cluster = TempCluster.under(tmp_path / "pg").start()
    try:
        root = cluster.root
        assert cluster.psql("SELECT 1").strip() == "1"
        live = reap_orphans(root.parent)
        assert root not in live and (root / "data").exists()  # its owner (we) still runs
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        (root / OWNER_FILE).write_text(dead)  # as if the session had been killed
        assert root in reap_orphans(root.parent)
        assert not root.exists()
        assert cluster.port and subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(cluster.port)],
            capture_output=True, check=False).returncode != 0
    finally:
        cluster.stop()


def test_only_this_projects_clusters_with_an_owner_are_touched() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "aftercall-pg-foreign"
        other.mkdir()
        assert reap_orphans(Path(tmp)) == [] and other.exists()
