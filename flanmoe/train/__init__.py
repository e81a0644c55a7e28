"""Training: params, data samplers, the training loop."""
