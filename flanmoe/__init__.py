"""flan-moe: sparse Mixture-of-Experts T5 models with instruction tuning (FLAN-MoE), as a pipeline."""

__version__ = "0.1.0"
