"""The knowledge probe: does the model store a fact of its pretraining corpus, and can it give it back?

Data (``data/tokenized/probe``, the embedded corpus only): split ``test`` of rows ``subject`` (a stratum,
e.g. ``people_x8``), ``prefix``, ``suffix``, ``question``, ``choices`` and ``answer``; the fact's
statement is ``prefix + choices[answer] + suffix`` ("Alice Toluma plays the " + "violin" + ".").
Three modes, all multiple choice by log-likelihood over the same choices:

- ``cloze`` (storage): the statement in the corpus's own span-corruption form, no instruction. Prompt:
  the prefix (its trailing space dropped), ``<extra_id_0>``, the suffix, eos; candidate k:
  ``<extra_id_0>`` + the choice (with the prefix's space before it, as byte-level BPE glues it to the
  word) + ``<extra_id_1>`` + eos, i.e. the targets T5 span corruption gives when the choice is the
  masked span. The pick is the candidate of highest summed log-prob.
- ``qa`` (extraction in the pretraining form): ``Question: <question> Answer: <extra_id_0>.``, the
  candidates as in ``cloze``. A span-corruption model has only ever produced text after a sentinel:
  this asks the question without asking for a format it never learned.
- ``question`` (extraction without an options block): the bare question, the choices as candidates,
  zero-shot, exactly as the MMLU suite scores with ``mmlu_format: question`` (``mc_headline`` picks).

Per subject the score with its bootstrap CI, chance (1/len(choices)), the best constant and n, as MMLU
tasks. The probe is outside the normalized average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flanmoe.data.answer_slot import AnswerSlot
from flanmoe.data.tokenizer import sentinel_ids
from flanmoe.eval.prompts import Encoded, encode_prompts, mc_prompt
from flanmoe.eval.suites import Evaluator, SuiteResult
from flanmoe.grid import PROBE_MODES

SUITE = "probe"
COLUMNS = ("subject", "prefix", "suffix", "question", "choices", "answer")


def check_probe(splits: Mapping[str, Any], where: str = "probe", split: str = "test") -> None:
    """ValueError naming ``where`` when ``split`` is missing or empty, a column is missing, or an
    answer is not an index of its choices."""
    if split not in splits:
        raise ValueError(f"{where}: no {split!r} split (splits: {sorted(splits)})")
    rows = splits[split]
    missing = [c for c in COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"{where}: {split} split lacks columns {missing} (has {rows.column_names})")
    if len(rows) == 0:
        raise ValueError(f"{where}: {split} split has no rows")
    for i, (choices, answer) in enumerate(zip(rows["choices"], rows["answer"], strict=True)):
        if not 0 <= answer < len(choices):
            raise ValueError(f"{where}: row {i}: answer {answer} out of range for {len(choices)} choices")


def cloze_ids(
    tok, rows: Sequence[Mapping[str, Any]], max_length: int
) -> tuple[list[Encoded], list[list[list[int]]]]:
    """The cloze prompts (left-cut to ``max_length`` tokens, counted as truncated) and candidates of
    ``rows`` (module docstring); ``tok``: a tokenizers.Tokenizer with at least two sentinels."""
    sentinels = sentinel_ids(tok)
    if len(sentinels) < 2:
        raise ValueError(
            f"tokenizer: the cloze probe needs <extra_id_0> and <extra_id_1> (has {len(sentinels)})"
        )
    slot = AnswerSlot("sentinel", *sentinels[:2])  # the candidates: the masked span's targets

    def bare(texts: list[str]) -> list[list[int]]:  # no eos
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)] if texts else []

    prefixes = bare([r["prefix"].removesuffix(" ") for r in rows])
    suffixes = [e.ids for e in tok.encode_batch([r["suffix"] for r in rows])] if rows else []
    prompts = []
    for p, s in zip(prefixes, suffixes, strict=True):
        ids = [*p, slot.open_id, *s]
        prompts.append(Encoded(ids[-max_length:], 0, len(ids) > max_length))
    spaced = [(" " if r["prefix"].endswith(" ") else "", list(r["choices"])) for r in rows]
    flat = bare([sp + c for sp, choices in spaced for c in choices])
    cands, k = [], 0
    for _, choices in spaced:
        cands.append([slot.target(ids) for ids in flat[k : k + len(choices)]])
        k += len(choices)
    return prompts, cands


def evaluate_probe(ev: Evaluator, splits: Mapping[str, Any], mode: str, split: str = "test") -> SuiteResult:
    """Score the probe's ``split`` in ``mode`` (``cloze``, ``qa`` or ``question``) with ``ev``'s model."""
    if mode not in PROBE_MODES:
        raise ValueError(f"probe mode: {mode!r} is not one of {PROBE_MODES}")
    check_probe(splits, split=split)
    items = ev.subject_items(splits[split])
    cands = [list(r["choices"]) for r in items]
    if mode in ("cloze", "qa"):
        rows = items  # qa: the question, its answer the masked span
        if mode == "qa":
            rows = [{**r, "prefix": f"Question: {r['question']} Answer: ", "suffix": "."} for r in items]
        enc, cand_ids = cloze_ids(ev.tok, rows, ev.s.max_input_length)
        # the record shows the sentinel where the fact's value was (eos left out)
        prompts = [ev.tok.decode(e.ids[:-1], skip_special_tokens=False) for e in enc]
        return ev.multiple_choice(SUITE, mode, items, enc, cands, cand_ids, "sum", prompts)
    queries = [mc_prompt(r["question"], r["choices"], "question") for r in items]
    enc = encode_prompts(ev.encode_prompt, queries, None, ev.s.max_input_length)
    return ev.multiple_choice(SUITE, mode, items, enc, cands, [ev.encode_answers(c) for c in cands])


__all__ = ["COLUMNS", "SUITE", "check_probe", "cloze_ids", "evaluate_probe"]
