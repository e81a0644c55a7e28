"""T5 span corruption: mask statistics, sentinel order, exact reconstruction, lengths helper."""

from __future__ import annotations

import numpy as np
import pytest

from flanmoe.data.span_corruption import (
    corrupted_lengths,
    noise_span_counts,
    random_spans_helper,
    random_spans_noise_mask,
    span_corrupt,
    span_corrupt_batch,
    span_uncorrupt,
)

FIRST, NSENT, EOS = 3, 100, 1
SENTINELS = range(FIRST, FIRST + NSENT)  # <extra_id_k> = 3 + k, as our tokenizer has them


@pytest.mark.parametrize("length", [2, 3, 10, 37, 141, 284, 1000])
def test_mask_counts_match_t5(length: int) -> None:
    rng = np.random.default_rng(0)
    mask = random_spans_noise_mask(length, 0.15, rng, 3.0, batch=8)
    num_noise, num_spans = noise_span_counts(length, 0.15, 3.0)
    assert mask.shape == (8, length)
    assert (mask.sum(axis=1) == num_noise).all()
    starts = mask & ~np.pad(mask, ((0, 0), (1, 0)))[:, :-1]
    assert (starts.sum(axis=1) == num_spans).all()
    assert not mask[:, 0].any()  # T5: the first run is non-noise
    assert num_noise == min(max(round(length * 0.15), 1), length - 1)


def test_mask_is_random_but_seeded() -> None:
    a = random_spans_noise_mask(200, 0.15, np.random.default_rng(7), batch=4)
    b = random_spans_noise_mask(200, 0.15, np.random.default_rng(7), batch=4)
    assert (a == b).all() and not (a[0] == a[1]).all()
    # spans spread out over the sequence: mean position of noise near the middle
    many = random_spans_noise_mask(200, 0.15, np.random.default_rng(1), batch=500)
    assert 80 < np.nonzero(many)[1].mean() < 120
    assert random_spans_noise_mask(10, 0.0, np.random.default_rng(0)).sum() == 0


@pytest.mark.parametrize("length", [2, 5, 30, 141, 500])
@pytest.mark.parametrize("density", [0.15, 0.5])
def test_corrupt_then_uncorrupt_is_exact(length: int, density: float) -> None:
    rng = np.random.default_rng(length)
    tokens = rng.integers(FIRST + NSENT, 5000, size=length)
    inputs, targets = span_corrupt(tokens, rng, density, 3.0, SENTINELS, EOS)
    assert inputs[-1] == EOS and targets[-1] == EOS
    sent_in = [t - FIRST for t in inputs if FIRST <= t < FIRST + NSENT]
    sent_tg = [t - FIRST for t in targets if FIRST <= t < FIRST + NSENT]
    assert sent_in == sent_tg == list(range(len(sent_in)))  # extra_id_0, 1, 2, ... in order
    assert targets[0] == FIRST  # targets open with <extra_id_0>
    assert (len(inputs), len(targets)) == corrupted_lengths(length, density, 3.0)
    assert span_uncorrupt(inputs, targets, SENTINELS, EOS) == tokens.tolist()
    # padding is ignored by the inverse
    padded = np.pad(inputs, (0, 5)), np.pad(targets, (0, 3))
    assert span_uncorrupt(*padded, SENTINELS, EOS) == tokens.tolist()


def test_batch_matches_rows() -> None:
    rng = np.random.default_rng(3)
    tokens = rng.integers(200, 900, size=(16, 141))
    mask = random_spans_noise_mask(141, 0.15, np.random.default_rng(4), batch=16)
    x, y = span_corrupt_batch(tokens, mask, SENTINELS, EOS)
    assert x.shape == (16, 128) and y.shape == (16, 29)
    for row in range(16):
        assert span_uncorrupt(x[row], y[row], SENTINELS, EOS) == tokens[row].tolist()
        kept = tokens[row][~mask[row]]
        assert (x[row][x[row] >= FIRST + NSENT] == kept).all()


def test_uncorrupt_rejects_out_of_order_sentinels() -> None:
    with pytest.raises(ValueError, match="out of order"):
        span_uncorrupt([500, FIRST + 1, EOS], [FIRST + 1, 600, EOS], SENTINELS, EOS)


@pytest.mark.parametrize("input_length", [16, 64, 128, 256, 512])
def test_helper_fills_inputs_exactly(input_length: int) -> None:
    raw, target_len = random_spans_helper(input_length, 0.15, 3.0)
    assert corrupted_lengths(raw, 0.15, 3.0) == (input_length, target_len)
    assert corrupted_lengths(raw + 1, 0.15, 3.0)[0] > input_length  # the largest such chunk
    assert random_spans_helper(512, 0.15, 3.0) == (568, 114)  # T5's own figures for 512
    assert random_spans_helper(256, 0.15, 3.0) == (284, 58)


def test_sentinels_anywhere_descending_from_the_top() -> None:
    top = 32099  # HF T5: <extra_id_0> = 32099, <extra_id_1> = 32098, ...
    sentinels = range(top, top - NSENT, -1)
    rng = np.random.default_rng(5)
    tokens = rng.integers(200, 30000, size=141)
    inputs, targets = span_corrupt(tokens, rng, 0.15, 3.0, sentinels, EOS)
    n_spans = noise_span_counts(141, 0.15, 3.0)[1]
    expected = list(range(top, top - n_spans, -1))
    assert [t for t in inputs if t > 30000] == [t for t in targets if t > 30000] == expected
    assert targets[0] == top  # targets open with <extra_id_0>
    assert span_uncorrupt(inputs, targets, sentinels, EOS) == tokens.tolist()
    with pytest.raises(ValueError, match="sentinels"):
        span_corrupt(tokens, rng, 0.15, 3.0, sentinels[:2], EOS)
