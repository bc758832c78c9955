"""Run one router worker: ``python -m services.router``."""

from services.router.bus import build
from services.runtime.worker import run_worker

if __name__ == "__main__":
    run_worker("router", build)
