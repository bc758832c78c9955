"""Inference: executes routing decisions through LiteLLM."""

import os

# LiteLLM fetches its price map from the internet at import unless told otherwise; the
# platform runs offline and prices come from our own configuration anyway.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
