"""A whole mesh for the hardening tests (issue 18): the default config with test-sized limits
and one extra API key whose token rate limit is small enough to be exceeded by one request."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from stellwerk.supervisor import DEFAULT_SCALE, Mesh
from tests.integration.mesh import running_mesh, write_test_config

API_KEY = "sk-stellwerk-demo"
TIGHT_KEY = "sk-stellwerk-tight"  # 20,000 tokens per minute
TIGHT_TOKENS = 20_000
END_USER_KEY = "sk-stellwerk-enduser"  # may forward end users; 3 requests per end user and minute
END_USER_REQUESTS = 3
MAX_CONCURRENT_PER_KEY = 4
# Short timeouts so the slow-client tests end quickly; every other limit is the default.
LIMITS: dict[str, Any] = {
    "max_concurrent_per_key": MAX_CONCURRENT_PER_KEY,
    "send_timeout_s": 1.0,
    "body_read_timeout_s": 5.0,
    "header_timeout_s": 1.0,
}


def hardened_config(directory: Path) -> Path:
    path = write_test_config(directory)
    config = yaml.safe_load(path.read_text())
    config["gateway_limits"] = LIMITS
    config["gateway_openapi"] = True  # the HTTP fuzzer reads the schema (with a key)
    tight = dict(config["api_keys"][0])
    tight.update(key_id="tight-claims", key_sha256=hashlib.sha256(TIGHT_KEY.encode()).hexdigest())
    config["api_keys"].append(tight)
    config["rate_limits"]["users"]["tight-claims"] = {"tokens": TIGHT_TOKENS, "per_s": 60}
    end_user_app = dict(config["api_keys"][0])
    end_user_app.update(key_id="enduser-app", key_sha256=hashlib.sha256(END_USER_KEY.encode()).hexdigest(),
                        forward_end_user=True)
    config["api_keys"].append(end_user_app)
    config["rate_limits"]["end_users"] = {"enduser-app": {"requests": END_USER_REQUESTS, "per_s": 60}}
    path.write_text(yaml.safe_dump(config))
    return path


def hardened_mesh(root: Path) -> Iterator[Mesh]:
    # No tool gateway: nothing here calls tools, and the mesh starts faster without it.
    scale = {**DEFAULT_SCALE, "toolgateway": 0}
    with running_mesh(root, hardened_config(root), extra_env={"STELLWERK_ACK_WAIT_S": "2"}, scale=scale) as mesh:
        yield mesh


def gateway_log(mesh: Mesh) -> str:
    return "".join(p.read_text(errors="replace") for p in mesh.logs.glob("*.log"))


def is_openai_error(response: httpx.Response) -> bool:
    """``{"error": {"message": str, "type": str, "param": str | None, "code": str}}``."""
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("code"), str)
        and (error.get("param") is None or isinstance(error.get("param"), str))
    )
