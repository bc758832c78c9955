"""Run one DLP worker (input and output screening): ``python -m services.dlp``."""

from services.dlp.bus import build
from services.runtime.worker import run_worker

if __name__ == "__main__":
    run_worker("dlp", build)
