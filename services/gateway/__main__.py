"""Run the gateway: ``python -m services.gateway [--host H] [--port P]``."""

from __future__ import annotations

import argparse

import uvicorn

from services.gateway.app import create_app
from services.gateway.errors import gateway_protocol
from services.gateway.settings import GatewayConfig
from services.runtime.logging import configure_logging
from services.runtime.settings import MeshSettings, load_config
from services.runtime.telemetry import configure_tracing


def main() -> None:
    settings = MeshSettings()
    config = load_config(settings.config_file)
    parser = argparse.ArgumentParser(prog="python -m services.gateway")
    parser.add_argument("--host", default=config.gateway_host)
    parser.add_argument("--port", type=int, default=config.gateway_port)
    args = parser.parse_args()
    configure_logging("gateway", settings.log_level)
    configure_tracing("gateway")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        access_log=False,  # access lines would carry client-chosen paths and headers
        loop="uvloop",  # libuv event loop and the C HTTP parser: less CPU per request
        http=gateway_protocol(GatewayConfig.load(settings.config_file).gateway_limits),  # httptools, with OpenAI-shaped errors of its own
    )


if __name__ == "__main__":
    main()
