"""Evaluation library: BBH answer normalisation and the score arithmetic (metrics), prompt layouts and
few-shot truncation (prompts), batched log-likelihood scoring and greedy generation against
one-at-a-time references (scoring), and the suites end to end on tiny random models, on in-memory
data and on the real-schema fixtures (suites)."""

from __future__ import annotations

import math

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flanmoe.data.answer_slot import AnswerSlot
from flanmoe.data.sources import SourceSpec, load_source
from flanmoe.data.tokenizer import EOS_ID, PAD_ID, sentinel_ids, train_tokenizer
from flanmoe.eval.metrics import (
    best_constant,
    bootstrap_ci,
    exact_match,
    normalize_answer,
    normalized_average,
    normalized_score,
)
from flanmoe.eval.probe import check_probe, cloze_ids, evaluate_probe
from flanmoe.eval.prompts import (
    encode_prompts,
    exemplar,
    join_fewshot,
    mc_candidates,
    mc_prompt,
)
from flanmoe.eval.scoring import generate, score_candidates
from flanmoe.eval.suites import EvalSettings, Evaluator, label_set, summarize
from flanmoe.eval.summary import options_summary
from flanmoe.model.config import ModelConfig
from flanmoe.model.generate import greedy_generate
from flanmoe.model.transformer import build_model

V = 300  # vocabulary of the models scored on raw ids
SHAPE = dict(d_model=32, d_ff=64, num_heads=2, d_kv=16, num_encoder_layers=2, num_decoder_layers=2)
DROPLESS_SWITCH = dict(num_experts=4, router="switch", dropless=True)  # moe_every 2: blocks 1 are MoE
DROPLESS_GSHARD = dict(num_experts=4, router="gshard", dropless=True)
MOE_LAYERS = {"encoder.1", "decoder.1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models here are tiny: intra-op threads only add contention (a file 10x slower on 2 busy
    cores), so run on one and give the setting back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(moe: dict | None = None, seed: int = 0, vocab: int = V, dtype=torch.float32):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**SHAPE, moe=moe), vocab).to(dtype).eval()


def random_prompts(n: int, seed: int, vocab: int = V) -> list[list[int]]:
    """``n`` prompts of varied lengths (2..16 tokens), each ending with eos, no pad inside."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 16, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (k,), generator=g).tolist() + [EOS_ID] for k in lengths]


def random_candidates(n: int, seed: int) -> list[list[list[int]]]:
    """Per prompt 1..4 candidates of 0..4 tokens plus eos (so lengths 1..5 within one prompt)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(1, 5, (1,), generator=g))
        lens = torch.randint(0, 5, (k,), generator=g).tolist()
        out.append([torch.randint(3, V, (m,), generator=g).tolist() + [EOS_ID] for m in lens])
    return out


@torch.no_grad()
def reference_logprob(model, prompt: list[int], cand: list[int]) -> float:
    """Sum of the candidate's token log-probs (eos included), one unpadded forward of batch 1."""
    out = model(torch.tensor([prompt]), labels=torch.tensor([cand]))
    logp = F.log_softmax(out.logits[0].double(), dim=-1)
    total = logp.gather(-1, torch.tensor(cand)[:, None]).sum().item()
    # the same number through the model's own loss: mean cross-entropy over the candidate's tokens
    assert total == pytest.approx(-out.lm_loss.item() * len(cand), abs=1e-4)
    return total


@torch.no_grad()
def reference_generate(model, prompt: list[int], max_new_tokens: int, eos_id: int = EOS_ID) -> list[int]:
    """One prompt alone, without the KV cache; cut at eos. Pad ids (never text) are dropped."""
    seq = greedy_generate(
        model, torch.tensor([prompt]), max_new_tokens=max_new_tokens, eos_id=eos_id, use_cache=False
    )[0].tolist()
    seq = seq[: seq.index(eos_id)] if eos_id in seq else seq
    return [t for t in seq if t != PAD_ID]


def no_pad(seqs: list[list[int]]) -> list[list[int]]:
    return [[t for t in s if t != PAD_ID] for s in seqs]


def emitted_token(refs: list[list[int]]) -> int:
    """The token most often emitted after the first step: used as eos, rows stop at various steps."""
    counts: dict[int, int] = {}
    for r in refs:
        for t in r[1:]:
            counts[t] = counts.get(t, 0) + 1
    return max(sorted(counts), key=lambda t: counts[t])


# =====================================================================================  metrics


@pytest.mark.parametrize(
    "prediction,ok",
    [
        ("(A)", True),
        ("A", True),
        ("A)", True),
        ("(A) a red apple", True),
        ("A.", True),
        ("A: because", True),
        ("  (A)  \n(B) later lines are ignored", True),
        ("\n(A)", True),
        ("Apple", False),
        ("a", False),  # case is kept
        ("(a)", False),
        ("(B)", False),
        ("B", False),
        ("The answer is (A)", False),
        ("", False),
    ],
)
def test_exact_match_letter_targets(prediction: str, ok: bool) -> None:
    assert exact_match(prediction, "(A)") is ok
    assert exact_match(prediction, " (A) ") is ok  # the target is stripped too
    assert (normalize_answer(prediction, "(A)") == "(A)") is ok


def test_normalize_answer_letter_forms_and_non_letters() -> None:
    for pred in ("(C)", "C", "C)", "C.", "(C) text", " C \nmore"):
        assert normalize_answer(pred, "(A)") == "(C)"  # any letter is canonicalised, right or wrong
    assert normalize_answer("Apple", "(A)") == "Apple"
    assert normalize_answer("  apple pie \n second", "(A)") == "apple pie"
    # with a non-letter target a bare letter is left alone
    assert normalize_answer("A", "True") == "A" and not exact_match("(A)", "A")


@pytest.mark.parametrize(
    "prediction,target,ok",
    [
        ("True", "True", True),
        ("  True  ", "True", True),
        ("True.", "True", True),  # trailing period dropped
        ("True .", "True", True),
        ("True\nFalse", "True", True),  # first line only
        ("\n\n  True\nFalse", "True", True),
        ("true", "True", False),  # case kept
        ("True", "True.", False),  # the target's period is required
        ("True.", "True.", True),
        ("True..", "True", False),  # only one period is dropped
        ("False", "True", False),
        ("cask pewee", "cask pewee", True),
        ("cask  pewee", "cask pewee", False),
        ("Yes, True", "True", False),
    ],
)
def test_exact_match_free_text(prediction: str, target: str, ok: bool) -> None:
    assert exact_match(prediction, target) is ok


def test_normalized_score_hand_values() -> None:
    assert normalized_score(0.25, 0.25) == pytest.approx(0.0)
    assert normalized_score(1.0, 0.25) == pytest.approx(100.0)
    assert normalized_score(0.625, 0.25) == pytest.approx(50.0)
    assert normalized_score(0.0, 0.25) == pytest.approx(-100.0 / 3)  # below chance is negative
    assert normalized_score(0.4, 0.0) == pytest.approx(40.0)  # chance 0: plain percent
    assert normalized_score(0.5, 0.5) == pytest.approx(0.0)
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="chance"):
            normalized_score(0.5, bad)


def test_best_constant() -> None:
    assert best_constant(["True", "False", "True", " True "]) == ("True", 0.75)
    value, acc = best_constant(["(A)", "(B)", "(C)", "(B)", "(B)"])
    assert value == "(B)" and acc == pytest.approx(0.6)
    assert best_constant(["x"]) == ("x", 1.0)
    assert best_constant([]) == ("", 0.0)


def test_bootstrap_ci_point_interval_and_width() -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(0, 2, size=40).astype(float).tolist()
    mean = sum(values) / len(values)
    point, lo, hi = bootstrap_ci(values, n_resamples=2000, seed=0)
    assert point == pytest.approx(mean, abs=1e-12)
    assert lo < mean < hi
    # four times the data, same mean: a narrower interval
    p4, lo4, hi4 = bootstrap_ci(values * 4, n_resamples=2000, seed=0)
    assert p4 == pytest.approx(mean) and lo4 <= mean <= hi4
    assert hi4 - lo4 < hi - lo
    # a lower confidence level gives a nested, narrower interval
    _, lo80, hi80 = bootstrap_ci(values, n_resamples=2000, confidence=0.8, seed=0)
    assert lo <= lo80 <= mean <= hi80 <= hi and hi80 - lo80 < hi - lo


def test_bootstrap_ci_width_matches_the_normal_approximation() -> None:
    # 400 fair coin flips: sd of the mean 0.025, so a 95% interval is about 2 * 1.96 * 0.025 = 0.098 wide.
    values = [1.0, 0.0] * 200
    point, lo, hi = bootstrap_ci(values, n_resamples=4000, seed=3)
    assert point == 0.5
    assert 0.08 < hi - lo < 0.12
    assert lo == pytest.approx(0.5 - 0.049, abs=0.012) and hi == pytest.approx(0.5 + 0.049, abs=0.012)


def test_bootstrap_ci_degenerate_cases_and_determinism() -> None:
    assert bootstrap_ci([1.0] * 25, n_resamples=500) == (1.0, 1.0, 1.0)
    assert bootstrap_ci({"a": [0.0] * 5, "b": [1.0] * 3}, n_resamples=500) == (0.5, 0.5, 0.5)
    values = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert bootstrap_ci(values, n_resamples=0) == (0.6, 0.6, 0.6)
    cont = np.random.default_rng(0).normal(size=30).tolist()  # continuous: every seed's quantiles differ
    assert bootstrap_ci(cont, n_resamples=300, seed=7) == bootstrap_ci(cont, n_resamples=300, seed=7)
    assert bootstrap_ci(cont, n_resamples=300, seed=7) != bootstrap_ci(cont, n_resamples=300, seed=8)
    nan = bootstrap_ci([], n_resamples=10)
    assert all(math.isnan(x) for x in nan)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(values, confidence=1.0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(values, confidence=0.0)


def test_bootstrap_ci_grouped_is_the_mean_of_task_means() -> None:
    groups = {"a": [1.0, 1.0, 1.0, 0.0], "b": [0.0, 1.0], "c": [0.0] * 6 + [1.0] * 2}
    task_means = [0.75, 0.5, 0.25]
    point, lo, hi = bootstrap_ci(groups, n_resamples=1000, seed=0)
    assert point == pytest.approx(sum(task_means) / 3)
    pooled = [x for v in groups.values() for x in v]
    assert point != pytest.approx(sum(pooled) / len(pooled))  # not the pooled mean (0.5 here)
    assert lo < point < hi
    assert bootstrap_ci(groups, n_resamples=0) == pytest.approx((0.5, 0.5, 0.5))
    # one task: exactly the list form (same resamples)
    assert bootstrap_ci({"a": groups["c"]}, n_resamples=200, seed=4) == bootstrap_ci(
        groups["c"], n_resamples=200, seed=4
    )
    # empty tasks are ignored
    assert bootstrap_ci({**groups, "empty": []}, n_resamples=0)[0] == pytest.approx(0.5)


def test_normalized_average_hand_values() -> None:
    suites = {
        "mmlu": ([1.0, 0.0, 1.0, 1.0], 0.25),  # 0.75 -> 66.67
        "bbh": ({"a": [1.0, 0.0], "b": [0.0, 0.0]}, 0.0),  # mean of task means 0.25 -> 25
    }
    expected = (100 * (0.75 - 0.25) / 0.75 + 25.0) / 2
    assert normalized_average(suites, n_resamples=0) == pytest.approx((expected,) * 3)
    point, lo, hi = normalized_average(suites, n_resamples=500, seed=0)
    assert point == pytest.approx(expected) and lo < point < hi


def test_summarize_tasks_vs_examples_by_hand() -> None:
    correct = {"a": [1.0, 1.0, 1.0, 0.0], "b": [0.0, 0.0]}
    chance = {"a": 0.25, "b": 0.5}
    baselines = {"a": 0.75, "b": 1.0}
    settings = EvalSettings(bootstrap=0)
    by_task = summarize(correct, chance, baselines, {"a": 1}, settings, average="tasks")
    assert by_task["score"] == pytest.approx(0.375)  # (0.75 + 0) / 2
    assert by_task["chance"] == pytest.approx(0.375) and by_task["normalized"] == pytest.approx(0.0)
    assert by_task["best_constant"] == pytest.approx(0.875)
    assert by_task["n"] == 6 and by_task["truncated"] == 1 and by_task["average"] == "tasks"
    assert by_task["tasks"]["a"]["score"] == 0.75 and by_task["tasks"]["a"]["normalized"] == pytest.approx(
        100 * 0.5 / 0.75, abs=1e-5
    )
    assert by_task["tasks"]["b"]["truncated"] == 0 and by_task["tasks"]["b"]["n"] == 2
    by_ex = summarize(correct, chance, baselines, {}, settings, average="examples")
    assert by_ex["score"] == pytest.approx(0.5)  # 3 / 6
    assert by_ex["chance"] == pytest.approx((0.25 * 4 + 0.5 * 2) / 6)
    assert by_ex["normalized"] == pytest.approx(25.0, abs=1e-4)
    assert by_ex["score_lo"] == by_ex["score_hi"] == by_ex["score"]


# =====================================================================================  prompts


def test_mc_prompt_formats_exact_strings() -> None:
    q, choices = "  Which instrument does Kim Mumea play? \n", ["violin", "flute", "oud"]
    assert mc_prompt(q, choices, "options") == (
        "Which instrument does Kim Mumea play?\n\nOPTIONS:\n- violin\n- flute\n- oud"
    )
    assert mc_prompt(q, choices, "letters") == (
        "Which instrument does Kim Mumea play?\nOptions:\n(A) violin\n(B) flute\n(C) oud"
    )
    assert mc_prompt(q, choices, "question") == "Which instrument does Kim Mumea play?"
    with pytest.raises(ValueError, match="format"):
        mc_prompt(q, choices, "bullets")  # type: ignore[arg-type]


def test_mc_candidates() -> None:
    choices = ["violin", "flute", "oud", "harp"]
    assert mc_candidates(choices, "options") == choices
    assert mc_candidates(choices, "question") == choices
    assert mc_candidates(choices, "letters") == ["(A)", "(B)", "(C)", "(D)"]
    assert mc_candidates([str(i) for i in range(26)], "letters")[-1] == "(Z)"
    with pytest.raises(ValueError, match="choices"):
        mc_candidates([str(i) for i in range(27)], "letters")


def test_exemplar_and_fewshot_layout() -> None:
    assert exemplar("2 + 2 =", "4") == "2 + 2 =\n4"
    shots = [exemplar("Q1?", "a1"), exemplar("Q2?", "a2")]
    assert join_fewshot(shots, "Q3?") == "Q1?\na1\n\nQ2?\na2\n\nQ3?"
    assert join_fewshot([], "Q3?") == "Q3?"


def char_encode(texts: list[str]) -> list[list[int]]:
    """A fake tokenizer: one id per character, then eos (lengths are len(text) + 1)."""
    return [[ord(c) + 3 for c in t] + [EOS_ID] for t in texts]


def test_encode_prompts_fits_and_drops_whole_exemplars_from_the_left() -> None:
    shots = ["first\nA", "second\nB", "third\nC"]
    query = "query?"
    full = join_fewshot(shots, query)
    # fits: nothing cut
    [e] = encode_prompts(char_encode, [query], [shots], max_length=len(full) + 1)
    assert e.ids == char_encode([full])[0] and e.shots == 3 and not e.truncated
    # one token too long: the leftmost exemplar goes, the rightmost two stay
    for max_length in (len(full), len(join_fewshot(shots[1:], query)) + 1):
        [e] = encode_prompts(char_encode, [query], [shots], max_length=max_length)
        assert e.ids == char_encode([join_fewshot(shots[1:], query)])[0]
        assert e.shots == 2 and e.truncated
    [e] = encode_prompts(char_encode, [query], [shots], max_length=len(join_fewshot(shots[1:], query)))
    assert e.ids == char_encode([join_fewshot(shots[2:], query)])[0] and e.shots == 1 and e.truncated
    # room for the query alone: no exemplar, query intact
    [e] = encode_prompts(char_encode, [query], [shots], max_length=len(query) + 1)
    assert e.ids == char_encode([query])[0] and e.shots == 0 and e.truncated


def test_encode_prompts_left_truncates_a_query_too_long_alone() -> None:
    query = "abcdefghijklmnopqrst"  # 21 ids with eos
    ids = char_encode([query])[0]
    for shots in ([], ["ex\n1"]):
        [e] = encode_prompts(char_encode, [query], [shots], max_length=8)
        assert len(e.ids) == 8 and e.ids == ids[-8:] and e.ids[-1] == EOS_ID
        assert e.shots == 0 and e.truncated
    [e] = encode_prompts(char_encode, [query], None, max_length=len(ids))
    assert e.ids == ids and not e.truncated
    with pytest.raises(ValueError, match="max_input_length"):
        encode_prompts(char_encode, [query], None, max_length=1)


def test_encode_prompts_batch_keeps_order_and_per_query_shots() -> None:
    queries = ["q0", "a much longer query number one", "q2"]
    exemplars = [["e" * 10, "f" * 3], ["g" * 5], []]
    out = encode_prompts(char_encode, queries, exemplars, max_length=25)
    # q0: "eeeeeeeeee\n\nfff\n\nq0" is 20 chars (+eos 21) fits; query 1 alone is 30 chars: cut; q2 alone
    assert [e.shots for e in out] == [2, 0, 0]
    assert [e.truncated for e in out] == [False, True, False]
    assert out[0].ids == char_encode([join_fewshot(exemplars[0], "q0")])[0]
    assert out[1].ids == char_encode([queries[1]])[0][-25:]
    assert out[2].ids == char_encode(["q2"])[0]


# =====================================================================================  tokenizer

MMLU_DEV = [
    {"question": "Which planet is largest?", "subject": "astronomy",
     "choices": ["Mars", "Jupiter", "Venus", "Mercury"], "answer": 1},
    {"question": "What orbits the Earth?", "subject": "astronomy",
     "choices": ["the Moon", "the Sun", "Venus", "Pluto"], "answer": 0},
    {"question": "What do plants absorb for photosynthesis?", "subject": "botany",
     "choices": ["oxygen", "nitrogen", "carbon dioxide", "helium"], "answer": 2},
    {"question": "Which part of a plant is underground?", "subject": "botany",
     "choices": ["leaf", "flower", "stem", "root"], "answer": 3},
]  # fmt: skip
MMLU_TEST = [
    {"question": "Which star is closest to Earth?", "subject": "astronomy",
     "choices": ["Sirius", "the Sun", "Vega", "Polaris"], "answer": 1},
    {"question": "How many moons does Mars have?", "subject": "astronomy",
     "choices": ["none", "one", "two", "three"], "answer": 2},
    {"question": "What is a galaxy?", "subject": "astronomy",
     "choices": ["a star system", "a planet", "a comet", "a moon"], "answer": 0},
    {"question": "What colour is chlorophyll?", "subject": "botany",
     "choices": ["red", "blue", "green", "white"], "answer": 2},
    {"question": "What does a seed grow into?", "subject": "botany",
     "choices": ["a rock", "a plant", "a cloud", "a fish"], "answer": 1},
]  # fmt: skip
BBH_TASKS = {
    "navigate": [
        ("Take 3 steps north. Take 3 steps south. Are you home?", "Yes"),
        ("Take 1 step east. Take 2 steps west. Are you home?", "No"),
        ("Take 4 steps north. Take 4 steps south. Are you home?", "Yes"),
        ("Take 5 steps west. Are you home?", "No"),
    ],
    "snarks": [
        ("Which is sarcastic? Options: (A) Great, rain again (B) Nice weather", "(A)"),
        ("Which is sarcastic? Options: (A) I love taxes (B) I pay taxes", "(A)"),
        ("Which is sarcastic? Options: (A) The bus is late (B) Oh wonderful, late again", "(B)"),
    ],
}
PAIRS = [
    {"task": "sentiment", "inputs": "Review: a lovely film. Positive or negative?", "targets": "positive"},
    {"task": "sentiment", "inputs": "Review: dull and slow. Positive or negative?", "targets": "negative"},
    {
        "task": "sentiment",
        "inputs": "Review: I smiled all along. Positive or negative?",
        "targets": "positive",
    },
    {"task": "sentiment", "inputs": "Review: a waste of time. Positive or negative?", "targets": "negative"},
    {"task": "copy", "inputs": "Repeat: blue sky", "targets": "blue sky"},
    {"task": "copy", "inputs": "Repeat: green tree", "targets": "green tree"},
]


def _corpus() -> list[str]:
    texts = []
    for r in MMLU_DEV + MMLU_TEST:
        texts += [r["question"], *r["choices"]]
    for rows in BBH_TASKS.values():
        texts += [x for pair in rows for x in pair]
    texts += [r["inputs"] + " " + r["targets"] for r in PAIRS]
    texts += ["OPTIONS:", "Options: (A) (B) (C) (D)", "True False not and or is", "Sort the following words"]
    return texts * 5


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(_corpus(), vocab_size=400, kind="bpe", num_sentinels=2)


def tok_encode(tok, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(list(texts))]


def test_encode_prompts_with_a_real_tokenizer(tok) -> None:
    shots = [exemplar(r["question"], r["choices"][r["answer"]]) for r in MMLU_DEV]
    query = MMLU_TEST[0]["question"]

    def enc(texts):
        return tok_encode(tok, texts)

    lengths = [len(enc([join_fewshot(shots[k:], query)])[0]) for k in range(len(shots) + 1)]
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] == len(enc([query])[0])
    [e] = encode_prompts(enc, [query], [shots], max_length=lengths[0])
    assert e.shots == 4 and not e.truncated
    [e] = encode_prompts(enc, [query], [shots], max_length=lengths[2])  # room for the last two only
    assert e.shots == 2 and e.truncated and e.ids[-1] == EOS_ID
    assert tok.decode(e.ids) == join_fewshot(shots[2:], query)
    [e] = encode_prompts(enc, [query], [shots], max_length=lengths[-1] - 2)  # query alone too long
    assert e.ids == enc([query])[0][-(lengths[-1] - 2) :] and e.shots == 0 and e.truncated


# =====================================================================================  scoring


@pytest.mark.parametrize("moe", [None, DROPLESS_SWITCH, DROPLESS_GSHARD], ids=["dense", "switch", "gshard"])
def test_score_candidates_equals_one_at_a_time_reference(moe) -> None:
    model = tiny_model(moe, seed=1)
    prompts, cands = random_prompts(6, seed=2), random_candidates(6, seed=3)
    got = score_candidates(model, prompts, cands, batch_size=4)
    assert [len(g) for g in got] == [len(c) for c in cands]
    for p, cs, gs in zip(prompts, cands, got, strict=True):
        for c, g in zip(cs, gs, strict=True):
            assert g.num_tokens == len(c)
            assert g.logprob == pytest.approx(reference_logprob(model, p, c), abs=1e-4)
            assert g.mean_logprob == pytest.approx(g.logprob / len(c))
            assert g.logprob < 0


@pytest.mark.parametrize("moe", [None, DROPLESS_SWITCH], ids=["dense", "switch"])
def test_score_candidates_independent_of_batch_size_and_company(moe) -> None:
    model = tiny_model(moe, seed=4)
    prompts, cands = random_prompts(7, seed=5), random_candidates(7, seed=6)

    def logprobs(got):
        return [[s.logprob for s in g] for g in got]

    base = logprobs(score_candidates(model, prompts, cands, batch_size=1))
    for bs in (2, 3, len(prompts)):
        other = logprobs(score_candidates(model, prompts, cands, batch_size=bs))
        np.testing.assert_allclose(np.concatenate(other), np.concatenate(base), atol=1e-4, rtol=0)
    # other prompts in the batch (longer ones: more padding, other candidates) change nothing
    extra_p = [p * 3 for p in random_prompts(5, seed=7)]
    extra_c = random_candidates(5, seed=8)
    mixed_p = [x for pair in zip(prompts[:5], extra_p, strict=True) for x in pair] + prompts[5:]
    mixed_c = [x for pair in zip(cands[:5], extra_c, strict=True) for x in pair] + cands[5:]
    mixed = logprobs(score_candidates(model, mixed_p, mixed_c, batch_size=len(mixed_p)))
    ours = mixed[0:10:2] + mixed[10:]
    np.testing.assert_allclose(np.concatenate(ours), np.concatenate(base), atol=1e-4, rtol=0)


def test_score_candidates_reports_routing_of_real_tokens_only() -> None:
    model = tiny_model(DROPLESS_SWITCH, seed=2)
    prompts, cands = random_prompts(5, seed=9), random_candidates(5, seed=10)
    calls: list[dict] = []
    score_candidates(model, prompts, cands, batch_size=2, on_stats=calls.append)
    assert len(calls) == 3  # one per batch of prompts
    assert all(set(c) == MOE_LAYERS for c in calls)
    assert sum(int(c["encoder.1"].num_tokens) for c in calls) == sum(len(p) for p in prompts)
    assert sum(int(c["decoder.1"].num_tokens) for c in calls) == sum(len(x) for cs in cands for x in cs)
    dense_calls: list[dict] = []
    score_candidates(tiny_model(), prompts, cands, on_stats=dense_calls.append)
    assert dense_calls == []


def test_score_candidates_argument_errors() -> None:
    model = tiny_model()
    prompts, cands = random_prompts(2, seed=0), random_candidates(2, seed=0)
    with pytest.raises(ValueError, match="candidates"):
        score_candidates(model, prompts, cands[:1])
    with pytest.raises(ValueError, match="batch_size"):
        score_candidates(model, prompts, cands, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, prompts, batch_size=0)


@pytest.mark.parametrize("moe", [None, DROPLESS_SWITCH], ids=["dense", "switch"])
def test_generate_equals_uncached_one_at_a_time(moe) -> None:
    model = tiny_model(moe, seed=5, dtype=torch.float64)  # float64: no argmax near-tie flips
    prompts = random_prompts(7, seed=11)
    new = 6
    refs = [reference_generate(model, p, new) for p in prompts]
    assert len({tuple(r) for r in refs}) > 1  # the prompts do lead to different continuations
    for bs in (1, 3, len(prompts)):
        assert no_pad(generate(model, prompts, max_new_tokens=new, batch_size=bs)) == refs
    # An eos the model does emit (a token of the references, mid-way): sequences stop at different
    # steps, so batches hold finished and running rows together.
    eos = emitted_token(refs)
    refs = [reference_generate(model, p, new, eos_id=eos) for p in prompts]
    lengths = {len(r) for r in refs}
    assert len(lengths) > 1 and min(lengths) < new
    for bs in (1, 3, len(prompts)):
        got = generate(model, prompts, max_new_tokens=new, batch_size=bs, eos_id=eos)
        assert no_pad(got) == refs
        assert all(eos not in g for g in got)


def test_generate_routing_skips_positions_after_eos() -> None:
    model = tiny_model(DROPLESS_SWITCH, seed=5, dtype=torch.float64)
    prompts = random_prompts(6, seed=12)
    new = 6
    first = [reference_generate(model, p, new) for p in prompts]
    eos = emitted_token(first)
    calls: list[dict] = []
    got = generate(model, prompts, max_new_tokens=new, batch_size=3, on_stats=calls.append, eos_id=eos)
    refs = [reference_generate(model, p, new, eos_id=eos) for p in prompts]
    assert no_pad(got) == refs
    # one call per forward: per batch, the encoder pass (with the first decoder step), then each step
    assert all(set(c) <= MOE_LAYERS and "decoder.1" in c for c in calls)
    assert sum("encoder.1" in c for c in calls) == 2  # two batches of 3
    steps = sum(len(c) for c in calls) - 2  # decoder steps run
    enc_tokens = sum(int(c["encoder.1"].num_tokens) for c in calls if "encoder.1" in c)
    dec_tokens = sum(int(c["decoder.1"].num_tokens) for c in calls)
    assert enc_tokens == sum(len(p) for p in prompts)
    # decoder positions routed: up to and including the step that emitted eos, else every step
    ended = [
        eos in greedy_generate(model, torch.tensor([p]), max_new_tokens=new, eos_id=eos)[0].tolist()
        for p in prompts
    ]
    assert any(ended)
    stop = [len(g) + 1 if e else new for g, e in zip(got, ended, strict=True)]
    assert dec_tokens == sum(stop)
    # a batch (prompts sorted by length, 3 at a time) runs until its last row has ended
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    assert steps == max(stop[i] for i in order[:3]) + max(stop[i] for i in order[3:])


# =====================================================================================  suites


def settings(**kw) -> EvalSettings:
    return EvalSettings(**{"bootstrap": 50, "batch_size": 3, "max_new_tokens": 4, **kw})


def mmlu_splits() -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {"dev": datasets.Dataset.from_list(MMLU_DEV), "test": datasets.Dataset.from_list(MMLU_TEST)}
    )


def options_block(r: dict) -> str:
    return r["question"] + "\n\nOPTIONS:\n" + "\n".join("- " + c for c in r["choices"])


def mmlu_row(rec: dict) -> dict:
    """The MMLU_TEST row of a record (options format: its prompt ends with the row's block)."""
    [row] = [r for r in MMLU_TEST if rec["prompt"].endswith(options_block(r))]
    return row


@pytest.fixture(scope="module")
def moe_model(tok):
    return tiny_model(DROPLESS_SWITCH, seed=6, vocab=tok.get_vocab_size())


def test_mmlu_zero_shot_records_scores_and_routing(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings())
    res = ev.mmlu(mmlu_splits(), shots=0)
    assert res.suite == "mmlu" and res.mode == "zero_shot"
    assert len(res.records) == len(MMLU_TEST)
    by_question = {r["question"]: r for r in MMLU_TEST}
    seen = set()
    for rec in res.records:
        assert {"prompt", "target", "prediction", "correct"} <= set(rec)
        q = rec["prompt"].split("\n", 1)[0]
        row = by_question[q]
        seen.add(q)
        assert rec["task"] == row["subject"] and rec["shots"] == 0 and not rec["truncated"]
        assert rec["prompt"] == options_block(row)
        assert rec["target"] == row["choices"][row["answer"]]
        # the pick is the argmax of the candidates' log-likelihoods, computed here one at a time
        prompt_ids = tok.encode(rec["prompt"]).ids
        ref = [reference_logprob(moe_model, prompt_ids, tok.encode(c).ids) for c in row["choices"]]
        assert rec["logprob_sum"] == pytest.approx(ref, abs=1e-4)
        assert rec["prediction"] == row["choices"][int(np.argmax(ref))]
        assert rec["correct"] == (rec["prediction"] == rec["target"])
    assert seen == set(by_question)
    s = res.summary
    assert s["n"] == len(MMLU_TEST) and s["average"] == "examples"
    assert s["score"] == pytest.approx(np.mean([r["correct"] for r in res.records]), abs=1e-6)
    assert s["score_lo"] <= s["score"] <= s["score_hi"]
    assert s["chance"] == pytest.approx(0.25)
    assert s["normalized"] == pytest.approx(normalized_score(s["score"], 0.25), abs=1e-4)
    assert set(s["tasks"]) == {"astronomy", "botany"}
    for subject, t in s["tasks"].items():
        recs = [r for r in res.records if r["task"] == subject]
        assert t["n"] == len(recs) and t["chance"] == pytest.approx(0.25)
        assert t["score"] == pytest.approx(np.mean([r["correct"] for r in recs]), abs=1e-6)
    # per-subject routing of every MoE layer
    routing = ev.routing_summary()
    assert set(routing) == {"mmlu"} and set(routing["mmlu"]) == {"astronomy", "botany"}
    for layers in routing["mmlu"].values():
        assert set(layers) == MOE_LAYERS
        for entry in layers.values():
            assert len(entry["expert_fraction"]) == DROPLESS_SWITCH["num_experts"]
            assert sum(entry["expert_fraction"]) == pytest.approx(1.0, abs=1e-5)
            assert entry["dropped_fraction"] == 0.0 and entry["entropy"] > 0


def test_mmlu_dense_model_records_no_routing(tok) -> None:
    ev = Evaluator(tiny_model(seed=2, vocab=tok.get_vocab_size()), tok, settings())
    res = ev.mmlu(mmlu_splits(), shots=0)
    assert len(res.records) == len(MMLU_TEST) and ev.routing_summary() == {}


def test_mmlu_few_shot_uses_dev_exemplars_of_the_same_subject(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings())
    res = ev.mmlu(mmlu_splits(), shots=2)
    assert res.mode == "few_shot" and len(res.records) == len(MMLU_TEST)
    for rec in res.records:
        row = mmlu_row(rec)
        dev = [d for d in MMLU_DEV if d["subject"] == row["subject"]]
        shots = [options_block(d) + "\n" + d["choices"][d["answer"]] for d in dev]
        assert rec["prompt"] == "\n\n".join([*shots, options_block(row)])
        assert rec["shots"] == 2 and not rec["truncated"]
        for d in MMLU_DEV:  # other subjects' exemplars are absent
            assert (d["question"] in rec["prompt"]) == (d["subject"] == row["subject"])
    # the headline and its by-sum / by-mean variants, from the recorded log-likelihoods
    picks_sum = [int(np.argmax(r["logprob_sum"])) for r in res.records]
    picks_mean = [int(np.argmax(r["logprob_mean"])) for r in res.records]
    answers = [mmlu_row(r)["answer"] for r in res.records]
    assert res.summary["acc_sum"] == pytest.approx(np.mean(np.equal(picks_sum, answers)), abs=1e-6)
    assert res.summary["acc_mean"] == pytest.approx(np.mean(np.equal(picks_mean, answers)), abs=1e-6)
    assert res.summary["score"] == pytest.approx(res.summary["acc_sum"])
    # one shot: only the first dev row of the subject
    one = ev.mmlu(mmlu_splits(), shots=1)
    for rec in one.records:
        first = next(d for d in MMLU_DEV if d["subject"] == rec["task"])
        assert rec["prompt"].startswith(
            options_block(first) + "\n" + first["choices"][first["answer"]] + "\n\n"
        )
        assert rec["shots"] == 1


def test_mmlu_mean_headline_and_truncation(tok, moe_model) -> None:
    queries = [tok.encode(options_block(r)).ids for r in MMLU_TEST]
    ev = Evaluator(moe_model, tok, settings(mc_headline="mean", max_input_length=max(map(len, queries))))
    res = ev.mmlu(mmlu_splits(), shots=2)
    for rec in res.records:  # every query fits alone, no exemplar fits beside it
        assert rec["shots"] == 0 and rec["truncated"]
        assert any(rec["prompt"] == options_block(r) for r in MMLU_TEST)
        assert rec["prediction"] == mmlu_row(rec)["choices"][int(np.argmax(rec["logprob_mean"]))]
    assert res.summary["truncated"] == len(MMLU_TEST)
    assert res.summary["score"] == pytest.approx(res.summary["acc_mean"])
    assert sum(t["truncated"] for t in res.summary["tasks"].values()) == len(MMLU_TEST)


@pytest.mark.parametrize("fmt", ["letters", "question"])
def test_mmlu_other_formats(tok, moe_model, fmt) -> None:
    ev = Evaluator(moe_model, tok, settings(mmlu_format=fmt, max_examples=1))
    res = ev.mmlu(mmlu_splits(), shots=0)
    assert [r["task"] for r in res.records] == ["astronomy", "botany"]  # max_examples: one per subject
    for rec in res.records:
        row = next(r for r in MMLU_TEST if rec["prompt"].startswith(r["question"]))
        if fmt == "letters":
            assert rec["prompt"] == row["question"] + "\nOptions:\n" + "\n".join(
                f"({'ABCD'[i]}) {c}" for i, c in enumerate(row["choices"])
            )
            assert rec["target"] == f"({'ABCD'[row['answer']]})"
            assert rec["prediction"] in ("(A)", "(B)", "(C)", "(D)")
        else:
            assert rec["prompt"] == row["question"] and rec["target"] == row["choices"][row["answer"]]
        assert len(rec["logprob_sum"]) == 4


def test_mmlu_errors(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings())
    with pytest.raises(ValueError, match="dev"):
        ev.mmlu({"test": MMLU_TEST}, shots=1)
    with pytest.raises(ValueError, match="validation"):
        ev.mmlu(mmlu_splits(), shots=0, split="validation")
    bad = [{**MMLU_TEST[0], "answer": 4}]
    with pytest.raises(ValueError, match="out of range"):
        ev.mmlu({"test": bad}, shots=0)


def bbh_tasks(targets: dict[str, list[str]] | None = None) -> dict[str, datasets.Dataset]:
    out = {}
    for task, rows in BBH_TASKS.items():
        tg = (targets or {}).get(task) or [t for _, t in rows]
        out[task] = datasets.Dataset.from_dict({"input": [i for i, _ in rows], "target": tg})
    return out


def test_bbh_few_shot_never_uses_the_example_itself(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings())
    res = ev.bbh(bbh_tasks(), shots=2, chance={"navigate": 0.5, "snarks": 0.5})
    assert res.mode == "few_shot" and len(res.records) == sum(len(v) for v in BBH_TASKS.values())
    for task, rows in BBH_TASKS.items():
        recs = [r for r in res.records if r["task"] == task]
        assert len(recs) == len(rows)
        pool = {f"{i}\n{t}" for i, t in rows}
        for k, rec in enumerate(recs):
            parts = rec["prompt"].split("\n\n")
            assert parts[-1] == rows[k][0]  # the query: the example's own input
            assert rec["target"] == rows[k][1] and rec["shots"] == 2 and len(parts) == 3
            assert len(set(parts[:-1])) == 2 and set(parts[:-1]) <= pool - {f"{rows[k][0]}\n{rows[k][1]}"}
            assert rec["prompt"].count(rows[k][0]) == 1
            assert rec["correct"] == exact_match(rec["prediction"], rec["target"])
            assert rec["normalized_prediction"] == normalize_answer(rec["prediction"], rec["target"])
    # more shots than other examples: every other example, still never itself
    res_all = ev.bbh(bbh_tasks(), shots=10)
    for task, rows in BBH_TASKS.items():
        recs = [r for r in res_all.records if r["task"] == task]
        for k, rec in enumerate(recs):
            parts = rec["prompt"].split("\n\n")
            assert rec["shots"] == len(rows) - 1
            assert sorted(parts[:-1]) == sorted(f"{i}\n{t}" for j, (i, t) in enumerate(rows) if j != k)
    # seeded: the same draws again
    again = ev.bbh(bbh_tasks(), shots=2, chance={"navigate": 0.5, "snarks": 0.5})
    assert [r["prompt"] for r in again.records] == [r["prompt"] for r in res.records]
    s = res.summary
    assert s["average"] == "tasks" and set(s["tasks"]) == set(BBH_TASKS)
    means = [np.mean([r["correct"] for r in res.records if r["task"] == t]) for t in BBH_TASKS]
    assert s["score"] == pytest.approx(np.mean(means), abs=1e-6)
    assert s["chance"] == pytest.approx(0.5) and s["tasks"]["snarks"]["chance"] == 0.5
    assert s["tasks"]["snarks"]["best_constant"] == pytest.approx(2 / 3, abs=1e-6)
    assert set(ev.routing_summary()["bbh"]) == set(BBH_TASKS)


def test_bbh_exact_match_against_the_models_own_generation(tok, moe_model) -> None:
    """Zero-shot: give example 0 of each task its reference generation (the model decoding it alone,
    uncached) as target: it, and only it, must be scored correct."""
    new = 4
    targets = {}
    for task, rows in BBH_TASKS.items():
        gen = reference_generate(moe_model, tok.encode(rows[0][0]).ids, new)
        first_line = tok.decode(gen).strip().split("\n")[0].strip()
        targets[task] = [first_line] + ["never generated zzz"] * (len(rows) - 1)
    ev = Evaluator(moe_model, tok, settings(max_new_tokens=new))
    res = ev.bbh(bbh_tasks(targets), shots=0, chance={})
    assert res.mode == "zero_shot"
    for task, rows in BBH_TASKS.items():
        recs = [r for r in res.records if r["task"] == task]
        assert [r["prompt"] for r in recs] == [i for i, _ in rows]
        assert [r["correct"] for r in recs] == [True] + [False] * (len(rows) - 1)
        assert res.summary["tasks"][task]["score"] == pytest.approx(1 / len(rows), abs=1e-6)
        assert res.summary["tasks"][task]["chance"] == 0.0  # a chance table without the task
    assert res.summary["score"] == pytest.approx(np.mean([1 / len(r) for r in BBH_TASKS.values()]), abs=1e-6)


def test_pairs_rank_classification_and_exact_match(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings())
    labels = {"sentiment": label_set([r["targets"] for r in PAIRS if r["task"] == "sentiment"])}
    assert labels["sentiment"] == ["negative", "positive"]
    res = ev.pairs("heldout", PAIRS, chance={"sentiment": 0.5}, labels=labels)
    assert len(res.records) == len(PAIRS)
    by_input = {r["inputs"]: r for r in PAIRS}
    for rec in res.records:
        row = by_input[rec["prompt"]]
        assert rec["task"] == row["task"] and rec["target"] == row["targets"]
        gen = tok.decode(reference_generate(moe_model, tok.encode(row["inputs"]).ids, 4))
        if row["task"] == "sentiment":
            prompt_ids = tok.encode(row["inputs"]).ids
            ref = [
                reference_logprob(moe_model, prompt_ids, tok.encode(lab).ids) for lab in labels["sentiment"]
            ]
            assert rec["prediction"] == labels["sentiment"][int(np.argmax(ref))]
            assert rec["correct"] == (rec["prediction"] == row["targets"])
            assert rec["generation"] == gen
        else:
            assert "generation" not in rec and rec["prediction"] == gen
            assert rec["correct"] == exact_match(gen, row["targets"])
    tasks = res.summary["tasks"]
    assert tasks["sentiment"]["metric"] == "accuracy" and tasks["copy"]["metric"] == "exact_match"
    sent = [r for r in res.records if r["task"] == "sentiment"]
    assert tasks["sentiment"]["score"] == pytest.approx(np.mean([r["correct"] for r in sent]), abs=1e-6)
    em = np.mean([exact_match(r["generation"], r["target"]) for r in sent])
    assert tasks["sentiment"]["exact_match"] == pytest.approx(em, abs=1e-6)
    assert tasks["sentiment"]["chance"] == 0.5 and tasks["copy"]["chance"] == 0.0
    assert tasks["sentiment"]["best_constant"] == pytest.approx(0.5)
    # rows already encoded by the tokenize stage give the same records
    encoded = [
        {"task": r["task"], "input_ids": tok.encode(r["inputs"]).ids, "targets": r["targets"]} for r in PAIRS
    ]
    again = ev.pairs("heldout", encoded, chance={"sentiment": 0.5}, labels=labels)
    assert again.records == res.records


def test_pairs_count_the_options_answered(tok, moe_model) -> None:
    """Held-in format: of the pairs whose prompt lists options, the share whose generation is one of them."""
    ev = Evaluator(moe_model, tok, settings())
    rows = [
        {"task": "mc", "inputs": mc_prompt("Pick one.", ["blue", "sky"], "options"), "targets": "blue"},
        {"task": "mc", "inputs": mc_prompt("Pick one.", ["x", "y"], "letters"), "targets": "(A)"},
        {"task": "copy", "inputs": "Repeat: blue sky", "targets": "blue sky"},  # no options: not counted
    ]
    res = ev.pairs("heldin", rows)
    gens = {r["prompt"]: r["prediction"] for r in res.records}
    g = [gens[r["inputs"]] for r in rows[:2]]
    answered = [
        exact_match(g[0], "blue") or exact_match(g[0], "sky"),
        exact_match(g[1], "(A)") or exact_match(g[1], "(B)"),
    ]
    assert res.summary["options_rows"] == 2
    assert res.summary["options_answered"] == pytest.approx(sum(answered) / 2, abs=1e-6)
    assert res.summary["options_exact_match"] == pytest.approx(
        (exact_match(g[0], "blue") + exact_match(g[1], "(A)")) / 2, abs=1e-6
    )
    assert "options_rows" not in ev.pairs("heldin", rows[2:]).summary


def test_options_summary_reads_the_generation_not_the_pick() -> None:
    opt = mc_prompt("Which?", ["red", "green", "blue"], "options")
    records = [
        {"prompt": opt, "prediction": " green", "target": "red", "correct": False},  # an option, wrong
        {"prompt": opt, "prediction": "red", "target": "red", "correct": True},
        {"prompt": opt, "prediction": "purple", "target": "red", "correct": False},  # not an option
        # rank classification picked a label, but the generation is what shows the format
        {"prompt": opt, "prediction": "red", "generation": "3", "target": "red", "correct": True},
        {"prompt": "Repeat: red", "prediction": "red", "target": "red", "correct": True},  # free-form
    ]
    assert options_summary(records) == {
        "options_rows": 4,
        "options_answered": 0.5,
        "options_exact_match": 0.25,
    }
    assert options_summary(records[-1:]) == {}


def test_label_set() -> None:
    assert label_set(["yes", " no", "yes", "maybe"]) == ["maybe", "no", "yes"]
    assert label_set([str(i) for i in range(17)]) is None
    assert label_set([str(i) for i in range(17)], max_labels=17) is not None


# =====================================================================================  real schema


def _bbh_fixture(fixtures, form: str) -> datasets.DatasetDict:
    configs = ["boolean_expressions", "word_sorting"]
    if form == "json":
        spec = SourceSpec(
            kind="local", path=str(fixtures / "bbh" / "{config}.json"), field="examples", configs=configs
        )
    else:
        spec = SourceSpec(kind="local", path=str(fixtures / "bbh_hub"), configs=configs)
    return load_source("bbh", spec, seed=0)


def test_bbh_on_the_real_json_layout(fixtures, tok, moe_model) -> None:
    tasks = _bbh_fixture(fixtures, "json")
    assert set(tasks) == {"boolean_expressions", "word_sorting"}
    direct = datasets.load_dataset(
        "json", data_files=str(fixtures / "bbh" / "word_sorting.json"), field="examples", split="train"
    )
    assert direct.to_list() == tasks["word_sorting"].to_list()
    ev = Evaluator(moe_model, tok, settings())
    chance = {"boolean_expressions": 0.5, "word_sorting": 0.0}
    res = ev.bbh(tasks, shots=1, chance=chance)
    n = sum(len(ds) for ds in tasks.values())
    assert len(res.records) == n and res.summary["n"] == n
    for task, ds in tasks.items():
        recs = [r for r in res.records if r["task"] == task]
        assert len(recs) == len(ds)
        for k, rec in enumerate(recs):
            other = ds[1 - k]  # two examples per task: the exemplar is the other one
            assert rec["prompt"] == f"{other['input']}\n{other['target']}\n\n{ds[k]['input']}"
            assert rec["target"] == ds[k]["target"] and rec["shots"] == 1
        assert res.summary["tasks"][task]["chance"] == chance[task]
    assert res.summary["chance"] == pytest.approx(0.25)
    assert 0.0 <= res.summary["score"] <= 1.0
    # the hub-directory layout of the same data gives the same records
    hub = ev.bbh(_bbh_fixture(fixtures, "hub"), shots=1, chance=chance)
    assert hub.records == res.records and hub.summary == res.summary


def test_mmlu_on_the_real_schema(fixtures, tok, moe_model) -> None:
    splits = load_source(
        "mmlu", SourceSpec(kind="local", path=str(fixtures / "mmlu" / "{split}.jsonl")), seed=0
    )
    ev = Evaluator(moe_model, tok, settings())
    res = ev.mmlu(splits, shots=1)
    test = splits["test"].to_list()
    dev = splits["dev"].to_list()
    assert len(res.records) == len(test) and res.summary["n"] == len(test)
    assert res.summary["chance"] == pytest.approx(0.25)
    assert set(res.summary["tasks"]) == {r["subject"] for r in test}
    for row in test:
        [rec] = [r for r in res.records if r["prompt"].endswith(options_block(row))]
        same = [d for d in dev if d["subject"] == row["subject"]][:1]
        assert rec["shots"] == len(same)  # a subject with no dev row gets no exemplar
        assert rec["prompt"] == "\n\n".join(
            [options_block(d) + "\n" + d["choices"][d["answer"]] for d in same] + [options_block(row)]
        )
        assert rec["target"] == row["choices"][row["answer"]] and rec["prediction"] in row["choices"]
    assert res.summary["score"] == pytest.approx(np.mean([r["correct"] for r in res.records]), abs=1e-6)
    assert set(ev.routing_summary()["mmlu"]) == {r["subject"] for r in test}


# =====================================================================================  knowledge probe

PROBE = [
    {"subject": "people_x8", "prefix": "Alice Toluma plays the ", "suffix": ".",
     "question": "Which instrument does Alice Toluma play?",
     "choices": ["violin", "flute", "harp", "drum"], "answer": 0},
    {"subject": "people_x8", "prefix": "Kim Mumea was born in ", "suffix": " and lives by the sea.",
     "question": "Where was Kim Mumea born?",
     "choices": ["Toluma", "Paris", "Vega", "Sirius"], "answer": 1},
    {"subject": "people_x1", "prefix": "Bob Vega won the prize in 19", "suffix": "",
     "question": "In which year did Bob Vega win the prize?",
     "choices": ["90", "85", "77", "64"], "answer": 3},
]  # fmt: skip


def probe_splits(rows: list[dict] | None = None) -> datasets.DatasetDict:
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(PROBE if rows is None else rows)})


def bare(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def test_probe_cloze_ids_are_the_corpus_span_corruption_form(tok) -> None:
    assert tok.token_to_id("<extra_id_0>") == 3 and tok.token_to_id("<extra_id_1>") == 4
    prompts, cands = cloze_ids(tok, PROBE, max_length=64)
    # prefix without its trailing space, <extra_id_0>, the suffix with eos
    assert prompts[0].ids == bare(tok, "Alice Toluma plays the") + [3] + bare(tok, ".") + [EOS_ID]
    assert prompts[1].ids == bare(tok, "Kim Mumea was born in") + [3] + bare(
        tok, " and lives by the sea."
    ) + [1]
    assert prompts[2].ids == bare(tok, "Bob Vega won the prize in 19") + [3, EOS_ID]  # empty suffix
    assert not any(p.truncated for p in prompts) and all(p.shots == 0 for p in prompts)
    # <extra_id_0> + the choice (spaced as in the statement) + <extra_id_1> + eos, every choice in order
    assert cands[0] == [[3, *bare(tok, " " + c), 4, EOS_ID] for c in PROBE[0]["choices"]]
    assert cands[1] == [[3, *bare(tok, " " + c), 4, EOS_ID] for c in PROBE[1]["choices"]]
    assert cands[2] == [[3, *bare(tok, c), 4, EOS_ID] for c in PROBE[2]["choices"]]  # "19" + "90"
    # a prompt over max_length keeps its last tokens (eos included) and is counted
    n = len(prompts[1].ids)
    short, _ = cloze_ids(tok, PROBE[1:2], max_length=n - 2)
    assert short[0].ids == prompts[1].ids[2:] and short[0].truncated


def test_probe_cloze_needs_two_sentinels() -> None:
    one = train_tokenizer(_corpus(), vocab_size=400, kind="bpe", num_sentinels=1)
    with pytest.raises(ValueError, match="extra_id_1"):
        cloze_ids(one, PROBE, max_length=64)


def test_probe_cloze_scores_per_subject(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings(mc_headline="mean"))  # the cloze ranks by sum regardless
    res = evaluate_probe(ev, probe_splits(), "cloze")
    assert (res.suite, res.mode) == ("probe", "cloze") and len(res.records) == len(PROBE)
    prompts, cands = cloze_ids(tok, PROBE, max_length=512)
    order = [2, 0, 1]  # by subject: people_x1, then people_x8
    for rec, i in zip(res.records, order, strict=True):
        row = PROBE[i]
        assert (rec["suite"], rec["mode"], rec["task"], rec["shots"]) == ("probe", "cloze", row["subject"], 0)
        assert rec["prompt"] == row["prefix"].removesuffix(" ") + "<extra_id_0>" + row["suffix"]
        ref = [reference_logprob(moe_model, prompts[i].ids, c) for c in cands[i]]
        assert rec["logprob_sum"] == pytest.approx(ref, abs=1e-4)
        assert rec["target"] == row["choices"][row["answer"]]
        assert rec["prediction"] == row["choices"][int(np.argmax(ref))]
        assert rec["correct"] == (rec["prediction"] == rec["target"])
    s = res.summary
    assert set(s["tasks"]) == {"people_x1", "people_x8"} and s["n"] == 3 and s["average"] == "examples"
    assert s["score"] == pytest.approx(s["acc_sum"])
    for subject, t in s["tasks"].items():
        recs = [r for r in res.records if r["task"] == subject]
        assert t["n"] == len(recs) and t["chance"] == pytest.approx(0.25)
        assert t["score"] == pytest.approx(np.mean([r["correct"] for r in recs]), abs=1e-6)
        assert t["score_lo"] <= t["score"] <= t["score_hi"]
    assert s["tasks"]["people_x8"]["best_constant"] == pytest.approx(0.5)  # answers 0 and 1
    assert set(ev.routing_summary()["probe"]) == {"people_x1", "people_x8"}


def test_probe_qa_mode_is_the_question_with_the_answer_as_the_masked_span(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings(max_examples=1))
    res = evaluate_probe(ev, probe_splits(), "qa")
    s0, s1 = sentinel_ids(tok)[:2]
    for rec, row in zip(res.records, [PROBE[2], PROBE[0]], strict=True):
        assert rec["mode"] == "qa" and rec["prompt"] == f"Question: {row['question']} Answer:<extra_id_0>."
        prompt = [*tok.encode(f"Question: {row['question']} Answer:", add_special_tokens=False).ids, s0]
        prompt += tok.encode(".").ids
        ref = [
            reference_logprob(
                moe_model, prompt, [s0, *tok.encode(" " + c, add_special_tokens=False).ids, s1, EOS_ID]
            )
            for c in row["choices"]
        ]
        assert rec["logprob_sum"] == pytest.approx(ref, abs=1e-4)
        assert rec["prediction"] == row["choices"][int(np.argmax(ref))]


def test_probe_question_mode_is_the_bare_question(tok, moe_model) -> None:
    ev = Evaluator(moe_model, tok, settings(mc_headline="mean", max_examples=1))
    res = evaluate_probe(ev, probe_splits(), "question")
    assert [r["task"] for r in res.records] == ["people_x1", "people_x8"]  # max_examples per subject
    for rec, row in zip(res.records, [PROBE[2], PROBE[0]], strict=True):
        assert rec["mode"] == "question" and rec["prompt"] == row["question"]
        prompt_ids = tok.encode(row["question"]).ids
        ref = [reference_logprob(moe_model, prompt_ids, tok.encode(c).ids) for c in row["choices"]]
        assert rec["logprob_sum"] == pytest.approx(ref, abs=1e-4)
        lengths = [len(tok.encode(c).ids) for c in row["choices"]]
        by_mean = int(np.argmax(np.array(ref) / np.array(lengths)))
        assert rec["prediction"] == row["choices"][by_mean]  # mc_headline applies, as for MMLU
    # the same rows through the MMLU suite in the question format: the same scores
    same = Evaluator(moe_model, tok, settings(mc_headline="mean", max_examples=1, mmlu_format="question"))
    as_mmlu = same.mmlu(probe_splits(), shots=0)
    assert [r["logprob_sum"] for r in as_mmlu.records] == [r["logprob_sum"] for r in res.records]
    assert as_mmlu.summary == res.summary


@pytest.mark.parametrize(
    ("splits", "match"),
    [
        (datasets.DatasetDict({"dev": datasets.Dataset.from_list(PROBE)}), "no 'test' split"),
        (
            datasets.DatasetDict({"test": datasets.Dataset.from_list(PROBE).remove_columns("suffix")}),
            r"lacks columns \['suffix'\]",
        ),
        (
            datasets.DatasetDict({"test": datasets.Dataset.from_list([{**PROBE[0], "answer": 4}])}),
            "out of range",
        ),
    ],
)
def test_probe_bad_data(tok, moe_model, splits, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_probe(splits, where="data/tokenized/probe")
    with pytest.raises(ValueError, match=match):
        evaluate_probe(Evaluator(moe_model, tok, settings()), splits, "cloze")


def test_probe_unknown_mode(tok, moe_model) -> None:
    with pytest.raises(ValueError, match="zero_shot"):
        evaluate_probe(Evaluator(moe_model, tok, settings()), probe_splits(), "zero_shot")


# =====================================================================================  answer form


def test_sentinel_answer_form_scores_and_reads_the_answer_in_the_slot(tok, moe_model) -> None:
    """``answer_form: sentinel``: every prompt ends with ``<extra_id_0>``, every candidate is the span
    after it (``<extra_id_0> answer<extra_id_1></s>``), as the tokenize stage writes the pairs; the
    answer of a generation is read out of the slot."""
    s0, s1 = tok.token_to_id("<extra_id_0>"), tok.token_to_id("<extra_id_1>")
    ev = Evaluator(moe_model, tok, settings(answer_form="sentinel"))

    def slot_prompt(text: str) -> list[int]:
        return tok.encode(text).ids[:-1] + [s0, EOS_ID]

    def slot_answer(text: str) -> list[int]:
        return [s0, *bare(tok, " " + text), s1, EOS_ID]

    res = ev.mmlu(mmlu_splits(), shots=0)
    by_question = {r["question"]: r for r in MMLU_TEST}
    for rec in res.records:
        row = by_question[rec["prompt"].split("\n", 1)[0]]
        ref = [
            reference_logprob(moe_model, slot_prompt(rec["prompt"]), slot_answer(c)) for c in row["choices"]
        ]
        assert rec["logprob_sum"] == pytest.approx(ref, abs=1e-4)
        assert rec["prediction"] == row["choices"][int(np.argmax(ref))]
    plain = Evaluator(moe_model, tok, settings()).mmlu(mmlu_splits(), shots=0)
    assert [r["logprob_sum"] for r in plain.records] != [r["logprob_sum"] for r in res.records]
    # pairs: labels ranked in the slot form, generations from the slot prompt, answer read out of it
    labels = {"sentiment": ["negative", "positive"]}
    got = ev.pairs("heldout", PAIRS, chance={"sentiment": 0.5}, labels=labels)
    for rec in got.records:
        row = next(r for r in PAIRS if r["inputs"] == rec["prompt"])
        gen = reference_generate(moe_model, slot_prompt(row["inputs"]), 4)
        assert rec.get("generation", rec["prediction"]) == tok.decode(ev.slot.answer(gen))
        if row["task"] == "sentiment":
            ref = [
                reference_logprob(moe_model, slot_prompt(row["inputs"]), slot_answer(x))
                for x in labels["sentiment"]
            ]
            assert rec["prediction"] == labels["sentiment"][int(np.argmax(ref))]


def test_answer_slot_reads_the_span_between_its_sentinels(tok) -> None:
    s0, s1 = tok.token_to_id("<extra_id_0>"), tok.token_to_id("<extra_id_1>")
    slot = AnswerSlot.of("sentinel", tok)
    assert slot.answer([s0, 7, 8, s1, 9, 10]) == [7, 8]  # what follows the closing sentinel is dropped
    assert slot.answer([7, 8]) == [7, 8]  # a model that never opens the slot: its whole generation
    assert slot.inputs([5, 6, EOS_ID]) == [5, 6, s0, EOS_ID] and slot.target([7, EOS_ID]) == [
        s0,
        7,
        s1,
        EOS_ID,
    ]
    assert slot.target_text("  Paris") == " Paris"
    plain = AnswerSlot.of("plain", tok)
    assert plain.answer([s0, 7, s1]) == [s0, 7, s1] and plain.inputs([5, EOS_ID]) == [5, EOS_ID]
    one = train_tokenizer(_corpus()[:50], vocab_size=300, kind="bpe", num_sentinels=1)
    with pytest.raises(ValueError, match=r"answer_form: 'sentinel' needs <extra_id_0> and <extra_id_1>"):
        AnswerSlot.of("sentinel", one)
    with pytest.raises(ValueError, match="answer_form: 'span' is not one of"):
        AnswerSlot.of("span", tok)
