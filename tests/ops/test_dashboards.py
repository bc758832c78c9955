"""Every query of every Grafana dashboard and alert rule names metrics a running mesh exports.

The mesh (tests/ops/conftest.py) runs every service as in production — workers, gateway,
FinOps and audit with their own metrics ports, the tool gateway, the vLLM simulators — and
each exposition is scraped after real traffic. Metrics from outside the mesh are listed in
``EXTERNAL`` with where they come from; they may appear only in panels that say so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.conftest import OpsMesh

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "compose" / "grafana" / "dashboards"
ALERTS = ROOT / "compose" / "prometheus" / "alerts.yml"
REFERENCE_DASHBOARDS = {
    "Stellwerk · Platform Health",
    "Stellwerk · Inference Efficiency",
    "Stellwerk · Cost per Use Case",
    "Stellwerk · Long-Context Usage",
    "Stellwerk · Agent Tooling",
}
# Not produced by any Stellwerk process, so absent from the local mesh by design. Each entry
# says what exports it; a panel using one must name that exporter in its description.
EXTERNAL = {
    "DCGM_FI_DEV_GPU_UTIL": "dcgm-exporter",  # NVIDIA DCGM exporter, GPU nodes only (default counters)
    "DCGM_FI_DEV_FB_USED": "dcgm-exporter",
    "DCGM_FI_DEV_FB_FREE": "dcgm-exporter",
    "DCGM_FI_DEV_POWER_USAGE": "dcgm-exporter",
}
PROMETHEUS_BUILTIN = {"up"}  # synthesised by Prometheus for every scrape target (alerts only)
_KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "offset",
             "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\boffset\s+\w+", " ", s)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[match.end():].lstrip().startswith("(") or match.group(0).lower() in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, stage) (rate(stellwerk_stage_duration_seconds_bucket{stage!="x"}[5m] offset 1h)))'
    ) == {"stellwerk_stage_duration_seconds_bucket"}
    assert metric_names("max by (model_name) (vllm:kv_cache_usage_perc) > 0.9 and up == 0") == {
        "vllm:kv_cache_usage_perc", "up"}
    assert metric_names('sum(rate(a_total[5m])) / scalar(sum(rate(b_total{x="y"}[5m]))) * 1000') == {"a_total", "b_total"}


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def prometheus_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr) of every Prometheus target."""
    found = []
    for board in dashboards():
        for panel in panels(board):
            for target in panel["targets"]:
                if target["datasource"]["uid"] == "prometheus":
                    found.append((board["title"], panel["title"], target["expr"]))
    return found


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def test_the_five_reference_dashboards_are_provisioned_from_files() -> None:
    boards = dashboards()
    assert {b["title"] for b in boards} == REFERENCE_DASHBOARDS
    assert len({b["uid"] for b in boards}) == len(boards)
    provider = yaml.safe_load((ROOT / "compose/grafana/provisioning/dashboards/dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((ROOT / "compose/grafana/provisioning/datasources/datasources.yaml").read_text())
    known = {s["uid"] for s in sources["datasources"]}
    for board in boards:
        assert panels(board), board["title"]
        for panel in panels(board):
            assert panel["targets"], (board["title"], panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in known, (board["title"], panel["title"])
                assert target["datasource"]["uid"] in {"prometheus", "loki"}
    # Loki (log) panels are explicit and few; everything else is a Prometheus query.
    assert sum(1 for b in boards for p in panels(b) if p["datasource"]["uid"] == "loki") == 1


def test_external_metrics_are_confined_to_panels_that_name_their_exporter() -> None:
    used: set[str] = set()
    for board in dashboards():
        for panel in panels(board):
            for target in panel["targets"]:
                if target["datasource"]["uid"] != "prometheus":
                    continue
                external = metric_names(target["expr"]) & set(EXTERNAL)
                for name in external:
                    assert EXTERNAL[name] in panel["description"], (panel["title"], name)
                used |= external
    assert used == set(EXTERNAL), f"unused EXTERNAL entries: {set(EXTERNAL) - used}"


async def _scrape(ops: OpsMesh) -> dict[str, set[str]]:
    """Exposed metric names per source, after one request of each kind through the gateway."""
    mesh = ops.mesh
    key = {"Authorization": "Bearer sk-stellwerk-demo"}
    async with httpx.AsyncClient(timeout=60) as http:
        for content in ("Fasse Vorgang 4711 zusammen.", "Schreib an erika@example.org wegen Vorgang 4711."):
            answer = await http.post(f"{mesh.gateway_url}/v1/chat/completions", headers=key,
                                     json={"model": "stellwerk", "messages": [{"role": "user", "content": content}]})
            assert answer.status_code == 200, answer.text
        targets = {f"{part.name}": f"http://127.0.0.1:{part.metrics_port}/metrics"
                   for part in mesh.parts if part.metrics_port}
        targets |= {f"{service} (own port)": f"http://127.0.0.1:{port}/metrics"
                    for service, port in ops.metrics_ports.items()}
        targets["gateway"] = f"{mesh.gateway_url}/metrics"
        targets |= {f"simulator {s.name}": f"http://127.0.0.1:{s.port}/metrics" for s in mesh.config.simulators}
        exposed: dict[str, set[str]] = {}
        for source, url in targets.items():
            response = await http.get(url)
            assert response.status_code == 200, (source, url)
            exposed[source] = _names(response.text)
    assert "erika@example.org" not in json.dumps(sorted(set().union(*exposed.values())))
    return exposed


def _names(text: str) -> set[str]:
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "untyped": ("",)}
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


@pytest.fixture(scope="module")
def exposed(ops_mesh: OpsMesh) -> dict[str, set[str]]:
    import asyncio

    return asyncio.run(_scrape(ops_mesh))


def test_every_service_of_the_mesh_was_scraped(exposed: dict[str, set[str]]) -> None:
    sources = set(exposed)
    for expected in ("dlp-1", "router-1", "inference-1", "finops-1", "audit-1", "toolgateway-1", "gateway",
                     "finops (own port)", "audit (own port)", "toolgateway (own port)"):
        assert expected in sources, sources
    assert any(s.startswith("simulator ") for s in sources)


def test_every_dashboard_query_refers_to_an_exported_metric(exposed: dict[str, set[str]]) -> None:
    available = set().union(*exposed.values())
    missing = [
        (board, panel, name)
        for board, panel, expr in prometheus_queries()
        for name in sorted(metric_names(expr))
        if name not in available and name not in EXTERNAL
    ]
    assert missing == []
    assert len(prometheus_queries()) > 50


def test_every_alert_rule_refers_to_an_exported_metric(exposed: dict[str, set[str]]) -> None:
    available = set().union(*exposed.values()) | PROMETHEUS_BUILTIN
    missing = [(alert, name) for alert, expr in alert_queries() for name in sorted(metric_names(expr))
               if name not in available]
    assert missing == []
