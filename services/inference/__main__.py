"""Run one inference worker: ``python -m services.inference``."""

from services.inference.bus import build
from services.runtime.worker import run_worker

if __name__ == "__main__":
    run_worker("inference", build)
