"""Run one audit worker: ``python -m services.audit``."""

from services.audit.bus import build
from services.runtime.worker import run_worker

if __name__ == "__main__":
    run_worker("audit", build)
