"""Run one tool gateway worker: ``python -m services.toolgateway``."""

from services.runtime.worker import run_worker
from services.toolgateway.bus import build

if __name__ == "__main__":
    run_worker("toolgateway", build)
