"""flan-moe: sparse Mixture-of-Experts T5 models with instruction tuning (FLAN-MoE), as a pipeline."""

from flanmoe.env import apply_offline_env

# offline by default, before anything imports datasets / huggingface_hub (explicit env values win)
apply_offline_env()

__version__ = "0.1.0"
