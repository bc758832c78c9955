"""Run one FinOps worker: ``python -m services.finops``."""

from services.finops.bus import build
from services.runtime.worker import run_worker

if __name__ == "__main__":
    run_worker("finops", build)
