"""T5.1.1-style encoder-decoder with MoE layers: config, modules, FLOPs accounting.

Entry points for the trainer and evaluation::

    cfg = ModelConfig(preset="tiny", moe=arch_presets()["switch"])   # or model_config_for_arch("switch")
    model = build_model(cfg, vocab_size=tokenizer_vocab)
    out = model(input_ids, attention_mask, labels=labels)             # Seq2SeqOutput
    out.loss.backward()                                               # lm_loss + aux_loss
    ids = greedy_generate(model.eval(), input_ids, attention_mask, max_new_tokens=32, eos_id=1)
    acct = accounting(cfg, vocab_size, enc_len, dec_len)              # params, FLOPs/token
    logs = reduce_router_stats(out.router_stats)                      # floats: the one host sync
    save_pretrained(model, "out/model", tokenizer_path="tokenizer.json")
    model = load_pretrained("out/model")
    model = load_hf("switch-base-8/"); save_hf(model, "out/hf", expert_capacity=64)  # Hugging Face format
"""

from typing import TYPE_CHECKING

from flanmoe.lazy import lazy_getattr

# name -> module: imported on first use (PEP 562), so that importing one submodule (a config, say)
# does not import torch and everything else the package holds
_LAZY = {
    "ModelConfig": "flanmoe.model.config",
    "MoEConfig": "flanmoe.model.config",
    "arch_presets": "flanmoe.model.config",
    "model_config_for_arch": "flanmoe.model.config",
    "Accounting": "flanmoe.model.flops",
    "accounting": "flanmoe.model.flops",
    "active_param_count": "flanmoe.model.flops",
    "dense_twin": "flanmoe.model.flops",
    "param_count": "flanmoe.model.flops",
    "load_hf": "flanmoe.model.hf",
    "save_hf": "flanmoe.model.hf",
    "MoEAux": "flanmoe.model.moe",
    "MoELayer": "flanmoe.model.moe",
    "load_config": "flanmoe.model.pretrained",
    "save_pretrained": "flanmoe.model.pretrained",
    "load_pretrained": "flanmoe.model.pretrained",
    "greedy_generate": "flanmoe.model.generate",
    "RouterStats": "flanmoe.model.stats",
    "RouterStatsAccumulator": "flanmoe.model.stats",
    "reduce_router_stats": "flanmoe.model.stats",
    "FlanMoEModel": "flanmoe.model.transformer",
    "KVCache": "flanmoe.model.generate",
    "Seq2SeqOutput": "flanmoe.model.transformer",
    "build_model": "flanmoe.model.transformer",
    "shift_right": "flanmoe.model.transformer",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


if TYPE_CHECKING:
    from flanmoe.model.config import ModelConfig, MoEConfig, arch_presets, model_config_for_arch
    from flanmoe.model.flops import Accounting, accounting, active_param_count, dense_twin, param_count
    from flanmoe.model.generate import KVCache, greedy_generate
    from flanmoe.model.hf import load_hf, save_hf
    from flanmoe.model.moe import MoEAux, MoELayer
    from flanmoe.model.pretrained import load_config, load_pretrained, save_pretrained
    from flanmoe.model.stats import RouterStats, RouterStatsAccumulator, reduce_router_stats
    from flanmoe.model.transformer import FlanMoEModel, Seq2SeqOutput, build_model, shift_right


__all__ = [
    "Accounting",
    "FlanMoEModel",
    "KVCache",
    "ModelConfig",
    "MoEAux",
    "MoEConfig",
    "MoELayer",
    "RouterStats",
    "RouterStatsAccumulator",
    "Seq2SeqOutput",
    "greedy_generate",
    "load_pretrained",
    "accounting",
    "active_param_count",
    "arch_presets",
    "build_model",
    "dense_twin",
    "load_config",
    "load_hf",
    "model_config_for_arch",
    "param_count",
    "reduce_router_stats",
    "save_hf",
    "save_pretrained",
    "shift_right",
]
