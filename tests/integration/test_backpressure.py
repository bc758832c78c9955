"""The gateway sheds load when the pipeline backs up, instead of queueing without bound."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from stellwerk.supervisor import Mesh
from tests.conftest import start_nats
from tests.integration.mesh import eventually, write_test_config

API_KEY = "sk-stellwerk-demo"


async def test_backlog_above_the_bound_gets_503_with_retry_after(tmp_path: Path) -> None:
    path = write_test_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["max_pipeline_backlog"] = 2
    path.write_text(yaml.safe_dump(config))
    nats_process, url = start_nats(tmp_path / "nats")
    # No DLP workers: every submitted request stays pending at the first stage.
    mesh = Mesh(config_file=path, state_dir=tmp_path / "state", nats_url=url, start_simulators=False,
                scale={"gateway": 1})
    try:
        await mesh.start()
        async with httpx.AsyncClient(timeout=10) as http:

            async def send() -> httpx.Response:
                return await http.post(
                    mesh.gateway_url + "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {API_KEY}", "X-Stellwerk-Timeout": "0.3"},
                    json={"model": "stellwerk", "messages": [{"role": "user", "content": "hallo"}]},
                )

            first = await send()
            assert first.status_code == 504  # nobody screens it before its deadline

            async def shed() -> httpx.Response | None:
                response = await send()
                return response if response.status_code == 503 else None

            refused = await eventually(shed, timeout_s=15)
            assert refused.json()["error"]["code"] == "overloaded"
            assert int(refused.headers["Retry-After"]) >= 1
            metrics = (await http.get(mesh.gateway_url + "/metrics")).text
            assert "stellwerk_gateway_pipeline_backlog" in metrics
    finally:
        mesh.stop()
        nats_process.terminate()
        nats_process.wait(timeout=5)
