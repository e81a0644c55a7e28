"""Training samplers: determinism, coverage, group splits, resume, token budget, padding, eval sets."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from flanmoe.train.data import (
    Batch,
    PackedBatches,
    TokenBudgetBatches,
    estimate_pad_fraction,
    eval_batches,
    split_validation,
)

ID0 = 10  # input_ids[:, 0] = ID0 + row: every row is recognisable in a batch


def packed_ds(n: int = 50, s: int = 8, t: int = 4) -> datasets.Dataset:
    """Fixed-length rows like the tokenized pretrain set: some trailing pad (0) in inputs and labels."""
    rng = np.random.default_rng(0)
    x = rng.integers(3, 100, (n, s), dtype=np.int32)
    y = rng.integers(3, 100, (n, t), dtype=np.int32)
    x[:, 0] = ID0 + np.arange(n)
    x[::3, -2:] = 0
    y[::2, -1] = 0
    feats = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int32"), length=s),
            "labels": datasets.Sequence(datasets.Value("int32"), length=t),
        }
    )
    return datasets.Dataset.from_dict({"input_ids": x.tolist(), "labels": y.tolist()}, features=feats)


def pairs_ds(n: int = 400, seed: int = 0) -> datasets.Dataset:
    """Variable-length pairs, each ending with eos (1); input lengths from a wide (log-normal) law."""
    rng = np.random.default_rng(seed)
    li = np.clip(rng.lognormal(3.0, 1.0, n).astype(int), 2, 300)
    lt = rng.integers(2, 12, n)
    inputs = [[ID0 + i, *rng.integers(3, 100, li[i] - 2).tolist(), 1] for i in range(n)]
    labels = [[*rng.integers(3, 100, lt[i] - 1).tolist(), 1] for i in range(n)]
    return datasets.Dataset.from_dict({"input_ids": inputs, "labels": labels})


def rows(batches: list[Batch]) -> list[int]:
    return [int(r) - ID0 for b in batches for r in b.input_ids[:, 0]]


def steps(sampler, n: int, groups: int) -> list[list[Batch]]:
    return [sampler.next(groups) for _ in range(n)]


def same(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
        for x, y in zip(a, b, strict=True)
    )


# ---------------------------------------------------------------- PackedBatches


def test_packed_deterministic_from_seed():
    ds = packed_ds()
    a, b, c = PackedBatches(ds, 8, seed=1), PackedBatches(ds, 8, seed=1), PackedBatches(ds, 8, seed=2)
    seq_a, seq_b, seq_c = (rows(sum(steps(s, 10, 2), [])) for s in (a, b, c))
    assert seq_a == seq_b
    assert seq_a != seq_c


def test_packed_epoch_has_every_row_once_then_next_epoch():
    ds = packed_ds(n=50)
    s = PackedBatches(ds, 8, seed=0)
    assert s.batches_per_epoch == 6  # 48 rows, the last 2 dropped
    epoch0 = rows(sum(steps(s, 6, 1), []))
    assert len(epoch0) == len(set(epoch0)) == 48
    assert s.state_dict() == {"epoch": 1, "index": 0}
    epoch1 = rows(sum(steps(s, 6, 1), []))
    assert len(set(epoch1)) == 48 and epoch1 != epoch0


def test_packed_groups_split_the_global_batch_exactly():
    ds = packed_ds()
    whole = PackedBatches(ds, 8, seed=3).next(1)[0]
    parts = PackedBatches(ds, 8, seed=3).next(4)
    assert [len(p) for p in parts] == [2, 2, 2, 2]
    assert torch.equal(torch.cat([p.input_ids for p in parts]), whole.input_ids)
    assert torch.equal(torch.cat([p.labels for p in parts]), whole.labels)
    assert sum(p.num_target_tokens for p in parts) == whole.num_target_tokens


@pytest.mark.parametrize(("a", "b"), [((2, 1), (1, 2)), ((2, 2), (4, 1)), ((4, 1), (1, 4))])
def test_world_and_accum_layouts_see_the_same_micro_batches(a, b):
    """Rank r, micro-step m takes group r * accum + m: (world, accum) layouts agree group by group."""

    def run(world: int, accum: int) -> list[list[Batch]]:
        samplers = [PackedBatches(packed_ds(), 8, seed=5) for _ in range(world)]  # one per rank
        out = []
        for _ in range(7):
            per_rank = [s.next(world * accum)[r * accum : (r + 1) * accum] for r, s in enumerate(samplers)]
            out.append([mb for rank in per_rank for mb in rank])  # by group index r * accum + m
        return out

    for x, y in zip(run(*a), run(*b), strict=True):
        assert same(x, y)


def test_packed_batch_tensors_labels_and_counts():
    ds = packed_ds()
    batch = PackedBatches(ds, 8, seed=0).next(2)[0]
    x, y = np.array(ds["input_ids"]), np.array(ds["labels"])
    r = np.array(rows([batch]))
    assert batch.input_ids.dtype == torch.int64 and batch.labels.dtype == torch.int64
    assert batch.attention_mask.dtype == torch.bool
    assert torch.equal(batch.input_ids, torch.from_numpy(x[r]).long())
    assert torch.equal(batch.attention_mask, torch.from_numpy(x[r] != 0))
    assert torch.equal(batch.labels, torch.from_numpy(np.where(y[r] == 0, -100, y[r])).long())
    assert batch.num_input_tokens == int((x[r] != 0).sum())
    assert batch.num_target_tokens == int((batch.labels != -100).sum())
    assert batch.padded_input_tokens + batch.num_input_tokens == x[r].size
    assert batch.padded_target_tokens + batch.num_target_tokens == y[r].size


def test_packed_errors_name_batch_size():
    ds = packed_ds(n=50)
    with pytest.raises(ValueError, match="batch_size"):
        PackedBatches(ds, 8, seed=0).next(3)
    with pytest.raises(ValueError, match="batch_size"):
        PackedBatches(ds, 51, seed=0)


@pytest.mark.parametrize("resume_groups", [4, 2, 8])
def test_packed_resume_equals_uninterrupted(resume_groups):
    ds = packed_ds(n=50)
    full = PackedBatches(ds, 8, seed=7)
    expected = [torch.cat([b.input_ids for b in step]) for step in steps(full, 15, 4)]  # crosses 2 epochs

    first = PackedBatches(ds, 8, seed=7)
    got = [torch.cat([b.input_ids for b in step]) for step in steps(first, 7, 4)]
    state = first.state_dict()
    assert state == {"epoch": 1, "index": 1} and all(type(v) is int for v in state.values())
    resumed = PackedBatches(ds, 8, seed=7)  # a new object, maybe another world size
    resumed.load_state_dict(state)
    got += [torch.cat([b.input_ids for b in step]) for step in steps(resumed, 8, resume_groups)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# ---------------------------------------------------------------- TokenBudgetBatches


def test_budget_deterministic_from_seed():
    ds = pairs_ds()
    a, b, c = (TokenBudgetBatches(ds, 512, seed=s) for s in (1, 1, 2))
    seq_a, seq_b, seq_c = (rows(sum(steps(s, 6, 2), [])) for s in (a, b, c))
    assert seq_a == seq_b and seq_a != seq_c


@pytest.mark.parametrize("bucket_size", [100, 2, 0])
def test_budget_epoch_has_every_example_once_and_respects_budget(bucket_size):
    ds = pairs_ds()
    s = TokenBudgetBatches(ds, 512, seed=0, bucket_size=bucket_size)
    n = s.groups_per_epoch()
    batches = sum(steps(s, n // 3, 3), [])  # whole epoch but the tail that does not fill a global batch
    seen = rows(batches)
    assert len(seen) == len(set(seen))
    assert s.state_dict() == {"epoch": 0, "index": 3 * (n // 3)}
    tail = s._epoch_groups(0)[3 * (n // 3) :]
    assert sorted(seen + [int(r) for g in tail for r in g]) == list(range(len(ds)))
    for b in batches:
        assert len(b) * (b.input_ids.shape[1] + b.labels.shape[1]) <= 512 or len(b) == 1
    s.next(3)  # the tail is dropped: a new epoch starts
    assert s.state_dict() == {"epoch": 1, "index": 3}


def test_budget_oversized_examples_get_their_own_group():
    ds = pairs_ds()
    lengths = np.array([len(a) + len(b) for a, b in zip(ds["input_ids"], ds["labels"], strict=True)])
    s = TokenBudgetBatches(ds, 128, seed=0, max_examples=16)
    assert s.oversized == int((lengths > 128).sum()) > 0
    for g in s._epoch_groups(0):
        assert len(g) <= 16
        assert len(g) == 1 or len(g) * (ds_max(ds, g, "input_ids") + ds_max(ds, g, "labels")) <= 128


def ds_max(ds: datasets.Dataset, group: np.ndarray, column: str) -> int:
    return max(len(ds[int(i)][column]) for i in group)


def test_budget_batch_contents_padding_mask_and_labels():
    ds = pairs_ds(n=100)
    for b in TokenBudgetBatches(ds, 512, seed=0).next(2):
        for k, r in enumerate(rows([b])):
            x, y = ds[r]["input_ids"], ds[r]["labels"]
            assert b.input_ids[k, : len(x)].tolist() == x and not b.input_ids[k, len(x) :].any()
            assert b.attention_mask[k].tolist() == [True] * len(x) + [False] * (b.input_ids.shape[1] - len(x))
            assert b.labels[k].tolist() == y + [-100] * (b.labels.shape[1] - len(y))
        assert b.num_input_tokens == int(b.attention_mask.sum())
        assert b.num_target_tokens + b.padded_target_tokens == b.labels.numel()


def test_budget_groups_split_the_global_batch_and_layouts_agree():
    ds = pairs_ds()
    one = sum(steps(TokenBudgetBatches(ds, 512, seed=4), 6, 1), [])  # 6 global batches of 1 group
    two = sum(steps(TokenBudgetBatches(ds, 512, seed=4), 3, 2), [])  # 3 of 2: the same group sequence
    assert same(one, two)
    # (world 2, accum 1) rank r takes group r; (world 1, accum 2) takes both: the same micro-batches
    ranks = [TokenBudgetBatches(ds, 512, seed=4) for _ in range(2)]
    world2 = [ranks[r].next(2)[r] for _ in range(3) for r in range(2)]
    assert same(world2, two)


@pytest.mark.parametrize("resume_groups", [4, 2, 6])
def test_budget_resume_equals_uninterrupted(resume_groups):
    ds = pairs_ds()
    flat = sum(steps(TokenBudgetBatches(ds, 512, seed=9), 12, 2), [])  # within epoch 0
    first = TokenBudgetBatches(ds, 512, seed=9)
    got = sum(steps(first, 3, 4), [])
    assert first.state_dict() == {"epoch": 0, "index": 12}
    resumed = TokenBudgetBatches(ds, 512, seed=9)
    resumed.load_state_dict(first.state_dict())
    got += sum(steps(resumed, 12 // resume_groups, resume_groups), [])
    assert same(got, flat)


def test_budget_resume_across_epochs():
    ds = pairs_ds()
    full = steps(TokenBudgetBatches(ds, 1024, seed=3), 40, 3)  # several epochs
    first = TokenBudgetBatches(ds, 1024, seed=3)
    got = steps(first, 17, 3)
    resumed = TokenBudgetBatches(ds, 1024, seed=3)
    resumed.load_state_dict(first.state_dict())
    got += steps(resumed, 23, 3)
    assert resumed.epoch >= 2
    assert all(same(a, b) for a, b in zip(got, full, strict=True))


def test_budget_errors_name_max_tokens_and_leave_the_state():
    ds = pairs_ds(n=50)
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBudgetBatches(ds, 0, seed=0)
    s = TokenBudgetBatches(ds, 4096, seed=0)
    with pytest.raises(ValueError, match="max_tokens"):
        s.next(s.groups_per_epoch() + 1)
    assert s.state_dict() == {"epoch": 0, "index": 0}


def test_bucketed_pad_fraction_much_lower_than_random():
    ds = pairs_ds(n=1000)
    bucketed = TokenBudgetBatches(ds, 1024, seed=0)
    random = TokenBudgetBatches(ds, 1024, seed=0, bucket_size=0)
    pf_b, pf_r = estimate_pad_fraction(bucketed), estimate_pad_fraction(random)
    assert pf_b < 0.15 and pf_r > 0.5 and pf_b < pf_r / 4
    assert bucketed.state_dict() == {"epoch": 0, "index": 0}  # estimating does not advance
    # the Batch counts give the same number on the same groups
    batches = bucketed.next(bucketed.groups_per_epoch())
    pad = sum(b.padded_input_tokens + b.padded_target_tokens for b in batches)
    total = pad + sum(b.num_input_tokens + b.num_target_tokens for b in batches)
    assert pad / total == pytest.approx(estimate_pad_fraction(TokenBudgetBatches(ds, 1024, seed=0), 10**6))


def test_batch_to_device_keeps_counts():
    b = PackedBatches(packed_ds(), 8, seed=0).next(1)[0]
    m = b.to("meta")
    assert m.input_ids.device.type == "meta" and m.labels.shape == b.labels.shape
    assert (m.num_target_tokens, m.padded_input_tokens) == (b.num_target_tokens, b.padded_input_tokens)
    assert 0 < b.pad_fraction < 1


# ---------------------------------------------------------------- validation


def test_split_validation_is_deterministic_and_disjoint():
    ds = packed_ds(n=50)
    train, val = split_validation(ds, 10, seed=1)
    train2, val2 = split_validation(ds, 10, seed=1)
    _, val3 = split_validation(ds, 10, seed=2)
    ids = lambda d: [r[0] - ID0 for r in d["input_ids"]]  # noqa: E731
    assert len(train) == 40 and len(val) == 10
    assert ids(val) == ids(val2) and ids(train) == ids(train2) and ids(val) != ids(val3)
    assert sorted(ids(train) + ids(val)) == list(range(50))
    # the samplers read the selection, not the underlying table
    assert sorted(rows(PackedBatches(val, 10, seed=0).next(2))) == ids(val)
    for n in (0, 50):
        with pytest.raises(ValueError, match="val_examples"):
            split_validation(ds, n, seed=1)


def test_eval_batches_packed_in_order():
    ds = packed_ds(n=50)
    batches = eval_batches(ds, batch_size=16)
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert rows(batches) == list(range(50))
    assert eval_batches(ds, max_tokens=24)[0].input_ids.shape == (2, 8)  # 24 // (8 + 4) rows
    with pytest.raises(ValueError, match="batch_size"):
        eval_batches(ds)


def test_eval_batches_pairs_all_once_under_budget():
    ds = pairs_ds(n=200)
    batches = eval_batches(ds, max_tokens=512)
    assert sorted(rows(batches)) == list(range(200))
    assert rows(batches) == rows(eval_batches(ds, max_tokens=512))  # fixed order
    for b in batches:
        assert len(b) * (b.input_ids.shape[1] + b.labels.shape[1]) <= 512 or len(b) == 1
    assert sum(b.num_target_tokens for b in batches) == sum(len(y) for y in ds["labels"])
    with pytest.raises(ValueError, match="max_tokens"):
        eval_batches(ds, batch_size=8)


class _CopiedColumn:
    """The column as the samplers held it before they read Arrow in place: a copy in RAM, flat."""

    def __init__(self, col):
        import pyarrow as pa
        import pyarrow.compute as pc

        self.fixed = pa.types.is_fixed_size_list(col.type)
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        self.values = arr.flatten().to_numpy(zero_copy_only=False).copy()
        self.lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def pad(self, rows: np.ndarray) -> np.ndarray:
        lengths = self.lengths[rows]
        pos = np.arange(int(lengths.max(initial=0)))
        if not len(self.values):
            return np.zeros((len(rows), len(pos)), np.int32)
        idx = np.minimum(self.starts[rows, None] + pos, len(self.values) - 1)
        return np.where(pos < lengths[:, None], self.values[idx], 0).astype(np.int32, copy=False)


def _copied_columns(ds):
    table = ds.select_columns(["input_ids", "labels"]).with_format("arrow")[:]
    return _CopiedColumn(table.column("input_ids")), _CopiedColumn(table.column("labels"))


def _saved(ds: datasets.Dataset, path) -> datasets.Dataset:
    """``ds`` as the training stages read it, memory-mapped from disk, in record batches of 7 rows
    (``save_to_disk`` writes 1,000: a map writes one record batch per batch)."""
    ds.save_to_disk(str(path))
    loaded = datasets.load_from_disk(str(path))
    return loaded.map(lambda b: b, batched=True, batch_size=7, cache_file_name=str(path) + ".arrow")


def test_in_place_columns_give_the_batches_of_copied_columns(tmp_path, monkeypatch):
    import flanmoe.train.data as data

    packed = _saved(packed_ds(60), tmp_path / "packed")
    pairs = _saved(pairs_ds(300), tmp_path / "pairs")
    assert packed.data.table.column("input_ids").num_chunks > 5
    train, _ = split_validation(pairs, 40, seed=3)  # an indices mapping over the chunks
    for ds in (packed, pairs, train):  # values read in place: views of the memory-mapped file
        col = data._columns(ds)[0]
        assert all(not v.flags.owndata for v in col.values)

    def run() -> list:
        out = []
        for ds, make in ((packed, lambda d: PackedBatches(d, 8, seed=5)),
                         (train, lambda d: TokenBudgetBatches(d, 200, seed=5, bucket_size=2))):  # fmt: skip
            sampler = make(ds)
            out += [b for _ in range(9) for b in sampler.next(2)]
            state = sampler.state_dict()
            resumed = make(ds)
            resumed.load_state_dict(state)
            out += [b for _ in range(3) for b in resumed.next(2)]
        out += eval_batches(packed, batch_size=16) + eval_batches(train, max_tokens=300)
        in_memory = pairs_ds(120)  # one chunk, and with an indices mapping
        return (
            out
            + eval_batches(in_memory, max_tokens=300)
            + eval_batches(in_memory.select(range(5, 99, 2)), 7, 300)
        )

    new = run()
    monkeypatch.setattr(data, "_columns", _copied_columns)
    old = run()
    assert same(new, old)
    for a, b in zip(new, old, strict=True):  # byte for byte: dtypes and shapes too
        assert a.input_ids.dtype == b.input_ids.dtype and a.labels.shape == b.labels.shape
