"""OpenAI-compatible vLLM simulator: stands in for the model routes where no GPU or API is reachable."""

from services.simulator.app import create_app
from services.simulator.settings import Mode, SimulatorSettings

__all__ = ["Mode", "SimulatorSettings", "create_app"]
