"""The library trains without the tracking and orchestration stack (a bare GPU machine has no mlflow,
prefect, dvc or datasets): every module of ``flanmoe.model``, ``flanmoe.train``, ``flanmoe.parallel``
and ``flanmoe.eval`` imports, and a tiny run trains, checkpoints, exports and evaluates, in a
process where those four packages cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCKED = ("mlflow", "prefect", "dvc", "datasets")

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, json, math, pkgutil, sys, tempfile
    from pathlib import Path

    BLOCKED = {blocked!r}

    class Unimportable(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Unimportable())
    try:
        import mlflow  # noqa: F401
        raise SystemExit("the blocker does not work")
    except ModuleNotFoundError:
        pass

    modules = []
    for pkg in ("flanmoe.model", "flanmoe.train", "flanmoe.parallel", "flanmoe.eval"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            importlib.import_module(info.name)
            modules.append(info.name)

    import numpy as np
    import torch

    from flanmoe.eval.scoring import generate, score_candidates
    from flanmoe.model import build_model, load_pretrained, model_config_for_arch, save_pretrained
    from flanmoe.parallel.checkpoint import Checkpointer
    from flanmoe.train import Batch, Dist, Trainer, TrainConfig
    from flanmoe.train.launch import prepare_model
    from flanmoe.train.trainer import state_dict_for_export

    class Rows:  # the trainer's Sampler protocol over numpy id matrices
        def __init__(self, x, y, b):
            self.x, self.y, self.b, self.i = x, y, b, 0
        def next(self, groups):
            s = (self.i % (len(self.x) // self.b)) * self.b
            self.i += 1
            return [Batch.from_arrays(self.x[s : s + self.b], self.y[s : s + self.b])]
        def state_dict(self):
            return {{"i": self.i}}
        def load_state_dict(self, st):
            self.i = st["i"]

    rng = np.random.default_rng(0)
    x = rng.integers(3, 20, size=(16, 12)); x[:, -1] = 1
    y = np.concatenate([x[:, :5], np.ones((16, 1), dtype=x.dtype)], axis=1)
    cfg = model_config_for_arch("switch", preset=None, d_model=32, d_ff=64, num_heads=2, d_kv=16,
                                num_encoder_layers=2, num_decoder_layers=2, moe={{"num_experts": 4}})
    tcfg = TrainConfig(steps=3, batch_size=4, warmup_steps=0, log_every=1, eval_every=3,
                       checkpoint_every=3, parallel={{"device": "cpu"}})
    torch.manual_seed(0)
    model = prepare_model(build_model(cfg, 64), tcfg, Dist())
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpointer(Path(tmp) / "ckpt", keep=1)
        result = Trainer(model, tcfg, Rows(x, y, 4), [Batch.from_arrays(x[:4], y[:4])],
                         checkpointer=ckpt).fit()
        assert ckpt.latest() is not None and ckpt.latest().name == "step-00000003"
        out = save_pretrained(model, Path(tmp) / "model", state_dict=state_dict_for_export(model))
        loaded = load_pretrained(out).eval()
        gen = generate(loaded, [list(r) for r in x[:2]], max_new_tokens=3)
        scores = score_candidates(loaded, [list(x[0])], [[list(y[0]), list(y[1])]])
    blocked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
    print(json.dumps(dict(modules=modules, steps=result.steps, losses=[p["train_loss"] for p in result.curve],
                          val_loss=result.val_loss, gen=gen, scores=[s.logprob for s in scores[0]],
                          blocked_loaded=blocked)))
    """
).format(blocked=BLOCKED)


def test_library_trains_without_mlflow_prefect_dvc_datasets():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["blocked_loaded"] == []
    for name in ("flanmoe.model.hf", "flanmoe.train.trainer", "flanmoe.train.data", "flanmoe.parallel.checkpoint",
                 "flanmoe.eval.suites", "flanmoe.eval.scoring"):  # fmt: skip
        assert name in res["modules"]
    assert res["steps"] == 3 and len(res["losses"]) == 3
    assert all(0 < v < 10 for v in res["losses"]) and 0 < res["val_loss"] < 10
    assert len(res["gen"]) == 2 and all(len(g) <= 3 for g in res["gen"])
    assert len(res["scores"]) == 2 and all(s < 0 for s in res["scores"])


def test_the_blocker_catches_a_library_import_of_a_blocked_package(tmp_path):
    """The check can fail: a module importing mlflow at top level is reported by the same blocker."""
    (tmp_path / "needs_mlflow.py").write_text("import mlflow\n")
    head = SCRIPT.split("modules = []")[0]
    code = head + f"sys.path.insert(0, {str(tmp_path)!r})\nimport needs_mlflow\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "No module named 'mlflow' (blocked by the test)" in proc.stderr
