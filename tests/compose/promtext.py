"""Metric names in a Prometheus exposition and in a Grafana dashboard's queries (test helper)."""

from __future__ import annotations

import re
from typing import Any

# The text format names a counter's family with or without its _total (prometheus_client
# writes `# TYPE x_total counter`; OpenMetrics writes `# TYPE x counter`).
_SUFFIXES = {"counter": ("", "_total"), "gauge": ("",),
             "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}


def exposed_names(text: str) -> set[str]:
    """Sample names of an exposition, and the names each ``# TYPE`` line promises (a labelled
    counter shows no sample until it first counts)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + s for s in _SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries(dashboard: Any) -> list[str]:
    """Every PromQL expression of a dashboard (panel targets, template variable queries)."""
    found: list[str] = []
    if isinstance(dashboard, dict):
        for key, value in dashboard.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(dashboard_queries(value))
    elif isinstance(dashboard, list):
        for value in dashboard:
            found.extend(dashboard_queries(value))
    return found


def queried_metrics(dashboard: Any) -> set[str]:
    return {m for q in dashboard_queries(dashboard) for m in re.findall(r"\baftercall_\w+", q)}
