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


def test_uncorrupt_row_ending_with_text() -> None:
    # "a <0> c" + "<0> b <1>": the last target sentinel opens the trailing non-noise run (salient rows)
    tokens, mask = np.array([[500, 501, 502]]), np.array([[False, True, False]])
    x, y = span_corrupt_batch(tokens, mask, SENTINELS, EOS)
    assert x.tolist() == [[500, FIRST, 502, EOS]] and y.tolist() == [[FIRST, 501, FIRST + 1, EOS]]
    assert span_uncorrupt(x[0], y[0], SENTINELS, EOS) == [500, 501, 502]
    with pytest.raises(ValueError, match="2 target spans but 1"):  # a span after it is no such sentinel
        span_uncorrupt(x[0], [FIRST, 501, FIRST + 1, 503, EOS], SENTINELS, EOS)


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


# ---------------------------------------------------------------- salient-span masking


def test_salient_token_flags_overlap_of_character_offsets() -> None:
    from flanmoe.data.salient import salient_token_flags

    text = "Alice plays the violin."
    # byte-level BPE: "Alice", " plays", " the", " violin", "." and eos (empty offsets)
    offsets = np.array([[0, 5], [5, 11], [11, 15], [15, 22], [22, 23], [0, 0]])
    assert salient_token_flags(offsets, [16, 22], len(text)).tolist() == [0, 0, 0, 1, 0, 0]
    # a span touching a token's edge only (half-open) does not make it salient; two spans, any order
    assert salient_token_flags(offsets, [22, 23, 0, 3], len(text)).tolist() == [1, 0, 0, 0, 1, 0]
    assert salient_token_flags(offsets, [15, 15], len(text)).tolist() == [0] * 6  # empty span
    assert salient_token_flags(offsets, [], len(text)).tolist() == [0] * 6
    with pytest.raises(ValueError, match="pairs"):
        salient_token_flags(offsets, [1, 2, 3], len(text))
    with pytest.raises(ValueError, match="outside"):
        salient_token_flags(offsets, [20, 30], len(text))


def _salient_reference(flags: np.ndarray, input_length: int, target_length: int, nsent: int) -> list[int]:
    """The rules of ``salient_noise_mask`` for one row, spelled out with ``span_corrupt_batch``."""
    mask = [bool(f) for f in flags]
    i = 0
    while i < len(mask) and mask[i]:  # no span at position 0
        mask[i] = False
        i += 1
    runs, s = [], None
    for j, m in enumerate([*mask, False]):
        if m and s is None:
            s = j
        elif not m and s is not None:
            runs.append((s, j))
            s = None
    kept, noise = [], 0
    for s, e in runs:  # spans in order while the targets (with a trailing sentinel) fit
        if noise + e - s + len(kept) + 1 + 2 > target_length or len(kept) + 2 > nsent:
            break
        kept.append((s, e))
        noise += e - s
    mask = np.zeros(len(flags), bool)
    for s, e in kept:
        mask[s:e] = True
    tokens = np.arange(1000, 1000 + len(flags))[None, :]
    for keep in range(len(flags), 0, -1):
        if any(s < keep < e for s, e in kept):
            continue
        x, y = span_corrupt_batch(tokens[:, :keep], mask[None, :keep], range(3, 3 + 1000), EOS)
        sentinels = int(np.count_nonzero(y < 1000)) - 1  # minus eos
        if x.shape[1] <= input_length and y.shape[1] <= target_length and sentinels <= nsent:
            return [*mask[:keep].astype(int).tolist(), *[0] * (len(flags) - keep), keep]
    raise AssertionError("keep 1 always fits")


def test_salient_noise_mask_rules() -> None:
    from flanmoe.data.salient import salient_noise_mask

    flags = np.array([[1, 1, 0, 1, 0, 0, 1, 1, 0, 0]], bool)
    mask, keep = salient_noise_mask(flags, 20, 20, 10)
    assert mask.astype(int).tolist() == [[0, 0, 0, 1, 0, 0, 1, 1, 0, 0]] and keep.tolist() == [10]
    # targets of 6: "<0> a <1> eos" fits, a second span "<1> b b <2>" does not: it stays text
    mask, keep = salient_noise_mask(flags, 20, 6, 10)
    assert mask.astype(int).tolist() == [[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]] and keep.tolist() == [10]
    # inputs of 6: the tail goes (7 tokens - 1 noise + 1 sentinel + eos = 8 > 6), never inside a span
    mask, keep = salient_noise_mask(flags, 6, 20, 10)
    assert keep.tolist() == [5] and mask.astype(int).tolist() == [[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]]
    mask, keep = salient_noise_mask(flags, 7, 20, 10)  # 8 tokens would cut the span 6..8: keep 6
    assert keep.tolist() == [6] and not mask[0, 6:].any()
    # nothing maskable: an empty mask (the caller uses random spans), the whole row kept
    mask, keep = salient_noise_mask(np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool), 8, 4, 5)
    assert not mask.any() and keep.tolist() == [4, 4]


@pytest.mark.parametrize("seed", range(4))
def test_salient_noise_mask_matches_the_rules_and_fits(seed: int) -> None:
    from flanmoe.data.salient import salient_corrupt, salient_noise_mask

    rng = np.random.default_rng(seed)
    raw = int(rng.integers(4, 60))
    flags = rng.random((200, raw)) < rng.uniform(0.05, 0.6)
    in_len, tg_len, nsent = int(rng.integers(3, raw + 3)), int(rng.integers(4, 16)), int(rng.integers(1, 6))
    mask, keep = salient_noise_mask(flags, in_len, tg_len, nsent)
    got = np.concatenate([mask.astype(int), keep[:, None]], axis=1).tolist()
    assert got == [_salient_reference(f, in_len, tg_len, nsent) for f in flags]
    tokens = rng.integers(1000, 2000, size=(200, raw))
    # all rows at once, as the tokenize stage does it: each row is span_corrupt_batch of its kept part
    xs, ys = salient_corrupt(tokens, mask, keep, SENTINELS[:nsent], EOS, 0, in_len, tg_len)
    assert xs.shape == (200, in_len) and ys.shape == (200, tg_len)
    for t, m, k, xr, yr in zip(tokens, mask, keep, xs, ys, strict=True):
        assert m[:k].sum() == m.sum() and not m[0]
        x, y = span_corrupt_batch(t[None, :k], m[None, :k], SENTINELS[:nsent], EOS)
        assert x.shape[1] <= in_len and y.shape[1] <= tg_len
        assert xr.tolist() == [*x[0], *[0] * (in_len - x.shape[1])]
        assert yr.tolist() == [*y[0], *[0] * (tg_len - y.shape[1])]
        assert span_uncorrupt(xr, yr, SENTINELS[:nsent], EOS) == t[:k].tolist()


def test_encode_salient_batch_flags_match_one_text_at_a_time() -> None:
    from flanmoe.data.salient import encode_salient, salient_token_flags
    from flanmoe.data.tokenizer import train_tokenizer

    texts = ["Alice plays the violin.", "", "Toluma is in Brekkenfjord. Bob plays the harp."] * 3
    spans = [[16, 22], [], [0, 6, 13, 25, 41, 45]] * 3
    assert [texts[2][s:e] for s, e in zip(spans[2][::2], spans[2][1::2], strict=True)] == [
        "Toluma",
        "Brekkenfjord",
        "harp",
    ]
    tok = train_tokenizer(texts * 5, 300, "bpe", 4, length=len(texts) * 5)
    out = encode_salient({"text": texts, "salient_spans": spans}, tok)
    for text, sp, ids, flags in zip(texts, spans, out["ids"], out["salient"], strict=True):
        enc = tok.encode(text)
        assert ids.tolist() == enc.ids and ids[-1] == EOS
        assert flags.tolist() == salient_token_flags(np.array(enc.offsets), sp, len(text)).tolist()
    assert [tok.decode(i[f == 1].tolist()).split() for i, f in zip(out["ids"], out["salient"], strict=True)][
        :3
    ] == [["violin"], [], ["Toluma", "Brekkenfjord", "harp"]]
    with pytest.raises(ValueError, match="outside a 0-character text"):
        encode_salient({"text": ["a", ""], "salient_spans": [[0, 1], [0, 1]]}, tok)
    with pytest.raises(ValueError, match="pairs"):
        encode_salient({"text": ["abc"], "salient_spans": [[0]]}, tok)
