"""Alert delivery: Alertmanager's routing config (``amtool``, Debian's prometheus-alertmanager
package; CI installs it), its place in compose and Kubernetes, and a firing rule that travels
from a real Prometheus through a real Alertmanager to a webhook receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stellwerk.supervisor import free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "compose" / "alertmanager" / "alertmanager.yml"
K8S = ROOT / "deploy" / "k8s"
RULES = ROOT / "compose" / "prometheus"
ROUTED = {"critical": "oncall-page", "warning": "platform-team", "info": "platform-digest"}


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install Debian's {package} package (apt-get install -y {package})",
                    pytrace=False)
    return found


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool", "prometheus-alertmanager"), *args], capture_output=True, text=True,
                          check=False)


def rule_severities() -> set[str]:
    groups = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    return {str(rule["labels"]["severity"]) for group in groups for rule in group["rules"]}


def test_amtool_accepts_the_config() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: someone\n")
    assert amtool("check-config", str(broken)).returncode != 0


def test_every_severity_the_rules_use_routes_to_its_receiver() -> None:
    assert rule_severities() <= set(ROUTED), "a rule with a severity nobody routes"
    for severity, receiver in ROUTED.items():
        result = amtool("config", "routes", "test", f"--config.file={CONFIG}", f"severity={severity}",
                        "alertname=StellwerkSomething", "tenant=acme")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == receiver, (severity, result.stdout)


def test_default_receivers_are_webhooks_that_send_resolutions() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == set(ROUTED.values())
    assert all(r.get("webhook_configs") for r in receivers.values())
    assert receivers["oncall-page"]["webhook_configs"][0]["send_resolved"] is True


def test_compose_runs_alertmanager_and_prometheus_sends_to_it() -> None:
    compose = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())
    service = compose["services"]["alertmanager"]
    image = service["image"]
    assert image.startswith("prom/alertmanager:v") and not image.endswith(":latest")
    assert "./alertmanager:/etc/alertmanager:ro" in service["volumes"]
    prometheus = yaml.safe_load((RULES / "prometheus.yml").read_text())
    targets = [t for am in prometheus["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]]
    assert targets == ["alertmanager:9093"]


def test_kubernetes_runs_the_same_alertmanager_with_the_same_routing_and_rules() -> None:
    assert (K8S / "alertmanager.yml").read_bytes() == CONFIG.read_bytes(), "copy compose's alertmanager.yml"
    assert (K8S / "alerts.yml").read_bytes() == (RULES / "alerts.yml").read_bytes(), "copy compose's alerts.yml"
    documents = [d for d in yaml.safe_load_all((K8S / "alerting.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    compose = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())
    assert container["image"] == compose["services"]["alertmanager"]["image"]
    assert kinds["Service"]["spec"]["ports"][0]["port"] == 9093
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "alerting.yaml" in kustomization["resources"]
    generated = {g["name"]: g["files"] for g in kustomization["configMapGenerator"]}
    assert generated["alertmanager-config"] == ["alertmanager.yml"]
    assert generated["stellwerk-alert-rules"] == ["alerts.yml"]


# --- a firing rule reaches a receiver ----------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, dict[str, Any]]] = []


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_a_firing_rule_reaches_the_receiver_of_its_severity(tmp_path: Path, receiver: Receiver) -> None:
    prometheus_bin = tool("prometheus", "prometheus")
    alertmanager_bin = tool("prometheus-alertmanager", "prometheus-alertmanager")
    # The shipped routing, with the webhooks pointed at this test and the waits shortened.
    config = yaml.safe_load(CONFIG.read_text())
    for r in config["receivers"]:
        for hook in r["webhook_configs"]:
            hook["url"] = hook["url"].replace("http://alert-webhook:9095", f"http://127.0.0.1:{receiver.server_port}")
    config["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    for route in config["route"]["routes"]:
        route["group_wait"] = "1s"
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": [
        {"alert": "StellwerkTestCritical", "expr": "vector(1)", "labels": {"severity": "critical", "tenant": "acme"}},
    ]}]}))
    am_port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"evaluation_interval": "1s", "scrape_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
    }))
    am_log, prom_log = tmp_path / "alertmanager.log", tmp_path / "prometheus.log"
    am = _start([alertmanager_bin, f"--config.file={tmp_path / 'alertmanager.yml'}",
                 f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                 "--cluster.listen-address="], am_log)
    prom = _start([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                   "--rules.alert.resend-delay=1s"],  # the first send can precede discovery
                  prom_log)
    try:
        _ready(f"http://127.0.0.1:{am_port}/-/ready", am, am_log)
        _ready(f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log)
        deadline = time.monotonic() + 30
        while not receiver.received:
            assert time.monotonic() < deadline, am_log.read_text() + prom_log.read_text()
            time.sleep(0.2)
    finally:
        for process in (prom, am):
            process.terminate()
        for process in (prom, am):
            process.wait(timeout=10)
    path, payload = receiver.received[0]
    assert path == "/stellwerk/critical"
    assert payload["receiver"] == "oncall-page" and payload["status"] == "firing"
    assert payload["alerts"][0]["labels"]["alertname"] == "StellwerkTestCritical"
