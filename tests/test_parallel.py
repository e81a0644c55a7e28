"""flanmoe.parallel: EP all-to-all, FSDP2, grad clipping and DCP checkpoints against one process.

Distributed tests spawn 2 gloo processes on 127.0.0.1; each child builds the single-process
reference itself (same seed) and compares. Reference semantics: rank r's micro-batch is half r of
the batch and one MoE routing group, so one process running the halves one after the other (as
gradient accumulation) computes the same thing, with gradients summed over ranks.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from flanmoe.model.config import ModelConfig, MoEConfig
from flanmoe.model.moe import MoELayer
from flanmoe.model.transformer import IGNORE_INDEX, PAD_ID, FlanMoEModel, build_model
from flanmoe.parallel import (
    AllToAllDispatcher,
    Checkpointer,
    ParallelDims,
    build_meshes,
    check_ep,
    clip_grad_norm_,
    init_distributed,
    parallelize,
)

VOCAB, WORLD, TOL = 64, 2, 1e-5
ROUTERS = [  # (router, dropless): capacity is per routing group = per rank
    ("switch", True),
    ("gshard", True),
    ("gshard", False),
    ("switch", False),
]


# ---------------------------------------------------------------- helpers


def _cfg(router: str = "switch", dropless: bool = True) -> ModelConfig:
    moe = MoEConfig(
        num_experts=4,
        moe_every=2,
        router=router,
        dropless=dropless,
        capacity_factor_train=1.0,
        min_capacity=1,
    )
    return ModelConfig(
        preset=None,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        num_encoder_layers=2,
        num_decoder_layers=2,
        moe=moe,
    )


def _model(cfg: ModelConfig, seed: int = 0) -> FlanMoEModel:
    torch.manual_seed(seed)
    return build_model(cfg, VOCAB)


def _batch(seed: int, b: int = 4, s: int = 8, t: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` ``[b, s]``, ``labels`` ``[b, t]`` with some padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (b, s), generator=g)
    labels = torch.randint(2, VOCAB, (b, t), generator=g)
    ids[0, -3:] = PAD_ID
    labels[1, -2:] = PAD_ID
    return ids, labels


def _half(x: torch.Tensor, r: int, world: int = WORLD) -> torch.Tensor:
    """Rank ``r``'s share of the batch (its micro-batch)."""
    n = x.shape[0] // world
    return x[r * n : (r + 1) * n]


def _num_targets(labels: torch.Tensor) -> int:
    return int(((labels != PAD_ID) & (labels != IGNORE_INDEX)).sum())


def _group_loss(model, ids, labels, n_global: int, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one micro-batch (routing group): token CE summed / global tokens + aux / groups."""
    out = model(ids, labels=labels)
    targets = labels.masked_fill(labels == PAD_ID, IGNORE_INDEX)
    ce = F.cross_entropy(out.logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="sum")
    return ce / n_global + out.aux_loss / n_groups, out.logits


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def _assert_close(a, b, what: str, tol: float = TOL, rel_norm: float | None = None) -> None:
    """Elementwise within ``tol``, or (bf16) relative error of the whole tensor within ``rel_norm``."""
    a, b = _full(a).detach().float(), _full(b).detach().float()
    assert a.shape == b.shape, (what, a.shape, b.shape)
    if rel_norm is not None:
        err = ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
        assert err < rel_norm, (what, err)
    else:
        assert torch.allclose(a, b, atol=tol, rtol=tol), (what, (a - b).abs().max().item())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    init_distributed("gloo", timeout_s=60)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def _spawn(fn, *args, world: int = WORLD) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the children
    mp.spawn(_entry, args=(world, _free_port(), fn, args), nprocs=world, join=True)


def _parallel(cfg: ModelConfig, ep: int, seed: int = 0, world: int = WORLD, **kw) -> FlanMoEModel:
    dims = ParallelDims(world, ep)
    return parallelize(_model(cfg, seed), build_meshes(dims, "cpu"), ep=ep, **kw)


# ---------------------------------------------------------------- forward / backward equivalence


def _worker_fwd_bwd(rank: int, world: int, ep: int, ac: bool, bf16: bool = False) -> None:
    ids, labels = _batch(1, b=2 * world)
    n, rel = _num_targets(labels), (5e-2 if bf16 else None)
    for router, dropless in ROUTERS:
        cfg = _cfg(router, dropless)
        ref = _model(cfg)
        ref_logits = []
        for r in range(world):  # one routing group per rank's share, losses summed
            loss, logits = _group_loss(ref, _half(ids, r, world), _half(labels, r, world), n, world)
            loss.backward()
            ref_logits.append(logits)
        dtype = torch.bfloat16 if bf16 else None
        model = _parallel(cfg, ep, world=world, activation_checkpointing=ac, param_dtype=dtype)
        loss, logits = _group_loss(model, _half(ids, rank, world), _half(labels, rank, world), n, world)
        loss.backward()
        _assert_close(logits, ref_logits[rank], f"{router} logits", rel_norm=rel)
        ref_params = dict(ref.named_parameters())
        for name, p in model.named_parameters():
            name = name.replace("_checkpoint_wrapped_module.", "")
            assert p.grad.dtype == torch.float32, name
            _assert_close(p.grad, ref_params[name].grad, f"{router} grad {name}", rel_norm=rel)
        for m in model.modules():
            if isinstance(m, MoELayer) and ep > 1:
                assert isinstance(m.dispatcher, AllToAllDispatcher)
                assert m.experts.wo.to_local().shape == (4 // world, 32, 16)  # E / (ep * dp_mod_ep)
                assert m.experts.wo.full_tensor().shape == (4, 32, 16)


@pytest.mark.distributed
def test_ep2_forward_backward_matches_single_process():
    _spawn(_worker_fwd_bwd, WORLD, 2, False)


@pytest.mark.distributed
def test_fsdp2_forward_backward_sums_gradients():
    _spawn(_worker_fwd_bwd, WORLD, 1, False)


@pytest.mark.distributed
def test_ep2_activation_checkpointing_matches():
    _spawn(_worker_fwd_bwd, WORLD, 2, True)


@pytest.mark.distributed
def test_ep2_bf16_params_close():
    _spawn(_worker_fwd_bwd, WORLD, 2, False, True)


def _worker_shard_experts(rank: int, world: int) -> None:
    from torch.distributed.tensor import Shard

    from flanmoe.model.experts import GroupedExperts, bmm_experts
    from flanmoe.parallel import shard_experts

    torch.manual_seed(0)
    experts = GroupedExperts(4, 8, 12, backend="bmm")
    full = {n: p.detach().clone() for n, p in experts.named_parameters()}
    mesh = build_meshes(ParallelDims(world, world), "cpu").ep
    shard_experts(experts, mesh)
    assert type(experts) is GroupedExperts  # the same module: only its parameters were re-registered
    mine = slice(2 * rank, 2 * rank + 2)  # E / ep = 2 experts per rank
    for name, p in experts.named_parameters():
        assert isinstance(p, DTensor) and p.placements == (Shard(0),)
        assert torch.equal(p.to_local(), full[name][mine]) and torch.equal(p.full_tensor(), full[name])
    x, counts = torch.randn(7, 8, requires_grad=True), torch.tensor([3, 4])
    y = experts(x, counts)  # the local shards: this rank's two experts
    ref = bmm_experts(x, counts, (full["wi_0"][mine], full["wi_1"][mine]), full["wo"][mine])
    torch.testing.assert_close(y, ref)
    y.sum().backward()
    assert isinstance(experts.wo.grad, DTensor) and experts.wo.grad.to_local().shape == (2, 12, 8)


@pytest.mark.distributed
def test_ep_shards_expert_weights_in_place_and_computes_with_local_shards():
    _spawn(_worker_shard_experts, WORLD)


@pytest.mark.distributed
def test_world4_ep2_experts_also_fsdp_sharded():
    """dp_mod_ep = 2: each expert lives on 2 ranks, FSDP-sharded between them."""
    _spawn(_worker_fwd_bwd, 4, 2, False, world=4)


# ---------------------------------------------------------------- training steps, clipping


def _ref_step(
    ref, opt, ids, labels, max_norm: float | None, world: int = WORLD
) -> tuple[float, torch.Tensor]:
    """One optimizer step of the reference: the ranks' shares as accumulated micro-batches."""
    n, total = _num_targets(labels), 0.0
    opt.zero_grad()
    for r in range(world):
        loss, _ = _group_loss(ref, _half(ids, r, world), _half(labels, r, world), n, world)
        loss.backward()
        total += loss.item()
    norm = clip_grad_norm_(ref, max_norm)
    opt.step()
    return total, norm


def _dist_step(model, opt, ids, labels, rank: int, max_norm: float | None) -> tuple[float, torch.Tensor]:
    n, world = _num_targets(labels), dist.get_world_size()
    opt.zero_grad()
    loss, _ = _group_loss(model, _half(ids, rank, world), _half(labels, rank, world), n, world)
    loss.backward()
    norm = clip_grad_norm_(model, max_norm)
    opt.step()
    total = loss.detach().clone()
    dist.all_reduce(total)
    return total.item(), norm


def _adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def _worker_train(rank: int, world: int, ep: int, router: str) -> None:
    cfg = _cfg(router, dropless=False)
    ref, model = _model(cfg), _parallel(cfg, ep, world=world)
    ref_opt, opt = _adamw(ref), _adamw(model)
    for step in range(3):
        ids, labels = _batch(10 + step, b=2 * world)
        max_norm = 0.5 if step < 2 else None  # clipping active on the first steps
        ref_loss, ref_norm = _ref_step(ref, ref_opt, ids, labels, max_norm, world)
        loss, norm = _dist_step(model, opt, ids, labels, rank, max_norm)
        assert abs(loss - ref_loss) < TOL, (step, loss, ref_loss)
        assert type(norm) is torch.Tensor and norm.dim() == 0
        _assert_close(norm, ref_norm, f"norm {step}")
        assert ref_norm > 0.5  # so that clipping changed the gradients
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        _assert_close(p, ref_params[name], f"weight {name}")


@pytest.mark.distributed
@pytest.mark.parametrize(
    "world,ep,router", [(2, 1, "gshard"), (2, 2, "switch"), (2, 2, "gshard"), (4, 2, "gshard")]
)
def test_train_steps_match_grad_accumulation(world, ep, router):
    """AdamW steps with clipping = one process accumulating the ranks' micro-batches."""
    _spawn(_worker_train, world, ep, router, world=world)


def test_clip_grad_norm_plain():
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4))]
    for p in params:
        p.grad = torch.full_like(p, 2.0)
    assert clip_grad_norm_(params, None).item() == pytest.approx(torch.sqrt(torch.tensor(28.0)).item())
    assert params[0].grad[0].item() == 2.0  # max_norm None: only computed
    norm = clip_grad_norm_(params, 1.0)
    assert norm.item() == pytest.approx(28**0.5)
    assert clip_grad_norm_(params, None).item() == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm_(params, None, norm_type=float("inf")).item() == pytest.approx(
        2 / 28**0.5, rel=1e-5
    )


# ---------------------------------------------------------------- checkpoints

K, N = 2, 4  # save after step K of N


def _worker_ckpt_save(rank: int, root: str) -> None:
    cfg = _cfg("gshard", dropless=False)
    model = _parallel(cfg, 2)
    opt = _adamw(model)
    ckpt, losses = Checkpointer(Path(root) / "ckpt", keep=2), []
    for step in range(1, N + 1):
        ids, labels = _batch(20 + step)
        losses.append(_dist_step(model, opt, ids, labels, rank, 0.5)[0])
        if step == K:
            rng = torch.get_rng_state()
            ckpt.save(step, model, opt, {"step": step, "rank": rank, "rng": rng})
            full = {n: _full(p).detach().clone() for n, p in model.named_parameters()}
            if rank == 0:
                torch.save(full, Path(root) / "full.pt")
    if rank == 0:
        torch.save(losses, Path(root) / "losses.pt")


def _worker_ckpt_load_ep1(rank: int, root: str) -> None:
    cfg = _cfg("gshard", dropless=False)
    model = _parallel(cfg, 1)
    opt = _adamw(model)
    ckpt = Checkpointer(Path(root) / "ckpt", keep=2)
    extra = ckpt.load(ckpt.latest(), model, opt)
    assert extra["step"] == K and extra["rank"] == rank  # same world size: this rank's extra, its RNG
    assert "rng" in extra
    full = torch.load(Path(root) / "full.pt")
    for name, p in model.named_parameters():
        _assert_close(p, full[name], f"loaded {name}", tol=0)
    losses = torch.load(Path(root) / "losses.pt")
    for step in range(K + 1, N + 1):
        ids, labels = _batch(20 + step)
        loss = _dist_step(model, opt, ids, labels, rank, 0.5)[0]
        assert abs(loss - losses[step - 1]) < TOL, (step, loss, losses[step - 1])


@pytest.mark.distributed
def test_checkpoint_ep2_resumes_at_world1_and_ep1(tmp_path):
    _spawn(_worker_ckpt_save, str(tmp_path))
    losses, full = torch.load(tmp_path / "losses.pt"), torch.load(tmp_path / "full.pt")
    experts = [n for n in full if ".experts." in n]
    assert experts and all(not torch.equal(full[n][:2], full[n][2:]) for n in experts)

    # World size 1, no process group, the two halves as two accumulated micro-batches.
    assert not dist.is_initialized()
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    assert ckpt.latest() == tmp_path / "ckpt" / f"step-{K:08d}"
    model = _model(_cfg("gshard", dropless=False), seed=123)  # another init: everything must come back
    opt = _adamw(model)
    extra = ckpt.load(ckpt.latest(), model, opt)
    assert extra == {"step": K, "rank": 0}  # other world size: rank 0's extra, no per-rank RNG
    for name, p in model.named_parameters():
        _assert_close(p, full[name], f"loaded {name}", tol=0)  # every expert, not rank 0's repeated
    for step in range(K + 1, N + 1):
        ids, labels = _batch(20 + step)
        loss = _ref_step(model, opt, ids, labels, 0.5)[0]
        assert abs(loss - losses[step - 1]) < TOL, (step, loss, losses[step - 1])

    _spawn(_worker_ckpt_load_ep1, str(tmp_path))  # world 2, ep 1 (experts FSDP-sharded)


def test_checkpoint_crash_mid_save_keeps_previous(tmp_path, monkeypatch):
    model = _model(_cfg())
    opt = _adamw(model)
    ckpt = Checkpointer(tmp_path, keep=2)
    assert ckpt.latest() is None
    ckpt.save(1, model, opt, {"step": 1})

    def crash(self, tmp, final):
        raise RuntimeError("killed before the rename")

    monkeypatch.setattr(Checkpointer, "_commit", crash)
    with pytest.raises(RuntimeError):
        ckpt.save(2, model, opt, {"step": 2})
    assert (tmp_path / ".tmp-step-00000002" / ".metadata").exists()  # shards written, not committed
    assert ckpt.latest() == tmp_path / "step-00000001"
    assert not (tmp_path / ".tmp-step-00000002").exists()  # leftover cleaned
    monkeypatch.undo()

    for step in (2, 3, 4):
        ckpt.save(step, model, opt, {"step": step})
    assert [p.name for p in ckpt.complete()] == ["step-00000003", "step-00000004"]
    fresh = _model(_cfg(), seed=5)
    assert ckpt.load(ckpt.latest(), fresh, _adamw(fresh)) == {"step": 4}
    for (n, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), n


# ---------------------------------------------------------------- validation


def test_ep_validation_names_ep():
    with pytest.raises(ValueError, match="^ep: "):
        ParallelDims(4, 3).validate()
    with pytest.raises(ValueError, match="^ep: "):
        check_ep(2, 4, 3)
    with pytest.raises(ValueError, match="^ep: "):
        check_ep(3, 4, 6)
    check_ep(2, 4, 8)
    assert ParallelDims(4, 2).validate().dp_mod_ep == 2
