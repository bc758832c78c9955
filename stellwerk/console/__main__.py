"""Run the console: ``python -m stellwerk.console [--host H] [--port P]``."""

from __future__ import annotations

import argparse

import uvicorn

from services.runtime.logging import configure_logging
from services.runtime.settings import MeshSettings, load_config
from stellwerk.console.app import create_console


def main() -> None:
    settings = MeshSettings()
    config = load_config(settings.config_file)
    parser = argparse.ArgumentParser(prog="python -m stellwerk.console")
    parser.add_argument("--host", default=config.gateway_host)
    parser.add_argument("--port", type=int, default=config.console_port)
    args = parser.parse_args()
    configure_logging("console", settings.log_level)
    uvicorn.run(create_console(settings), host=args.host, port=args.port, log_level=settings.log_level,
                access_log=False)  # access lines would carry request ids searched for and form paths


if __name__ == "__main__":
    main()
