"""T5.1.1-style encoder-decoder with MoE layers: config, modules, FLOPs accounting."""
