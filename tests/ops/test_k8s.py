"""Kubernetes manifests: one Deployment per service with its own NATS user, and a KEDA
ScaledObject per worker service with a NATS JetStream trigger for each durable it pulls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from schemas.streams import CONSUMERS
from stellwerk import nats_auth

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / "services.yaml").read_text()) if d]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def test_every_durable_consumer_scales_its_service_through_keda() -> None:
    scaled = of_kind("ScaledObject")
    deployments = of_kind("Deployment")
    for consumer in CONSUMERS:
        so = scaled[consumer.service]
        assert so["spec"]["scaleTargetRef"]["name"] == consumer.service in deployments
        triggers = [t["metadata"] for t in so["spec"]["triggers"] if t["type"] == "nats-jetstream"]
        assert {"stream": consumer.stream, "consumer": consumer.durable} in [
            {"stream": t["stream"], "consumer": t["consumer"]} for t in triggers], consumer.durable
        assert all(t["account"] == nats_auth.ACCOUNT for t in triggers)
    assert set(scaled) == {c.service for c in CONSUMERS}


def test_every_service_runs_with_its_own_user_and_secrets_from_the_cluster() -> None:
    users = {p.user for p in nats_auth.principals()}
    for name, deployment in of_kind("Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["STELLWERK_NATS_USER"]["value"] == name in users
        assert env["STELLWERK_NATS_PASSWORD_FILE"]["value"].startswith("/run/secrets/")
        assert env["STELLWERK_STREAM_REPLICAS"]["value"] == "3"
        assert len(env["STELLWERK_NATS_URL"]["value"].split(",")) == 3
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["nats-password"]["secret"]["secretName"] == f"nats-user-{name}"
        # The end users' pseudonym key (issue 14): the gateway's alone.
        assert ("end-user-hash-key" in volumes) == (name == "gateway")
        assert not any("password" in e["name"].lower() and "value" in e and "FILE" not in e["name"] for e in env.values())


def test_nats_chart_values_cover_every_generated_user_and_the_committed_auth_is_current() -> None:
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    env = values["container"]["env"]
    assert set(env) == set(nats_auth.new_secrets()) | {"NATS_JS_KEY"}
    assert values["config"]["cluster"]["replicas"] == 3
    assert values["config"]["jetstream"]["fileStore"]["enabled"] is True
    assert (K8S / "auth.conf").read_text() == nats_auth.render_auth()
