"""The evaluation suites, on any data in the real schemas: MMLU (``question``, ``subject``,
``choices``, ``answer``; splits ``dev`` for exemplars and ``test``), BBH (one dataset per task of
``input``, ``target``) and (inputs, targets) pairs (a fine-tuning task's test split, held-in
instruction pairs).

``Evaluator`` scores a model on them and returns, per suite, per-example records (prompt, target,
prediction, correct) and a summary: per task the headline accuracy with its bootstrap CI, the chance
level, the paper's normalized score, a best-constant baseline and truncation counts; per suite the
same over tasks. MoE routing is accumulated per (suite, task) for the expert-specialization plot.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flanmoe.data.answer_slot import AnswerForm, AnswerSlot
from flanmoe.eval.answer_space import task_chance
from flanmoe.eval.metrics import best_constant, exact_match, normalize_answer
from flanmoe.eval.prompts import Encoded, MCFormat, encode_prompts, exemplar, mc_candidates, mc_prompt
from flanmoe.eval.scoring import generate, score_candidates
from flanmoe.eval.summary import options_summary, round6, summarize
from flanmoe.model.stats import RouterStatsAccumulator

Headline = Literal["sum", "mean"]


@dataclass
class EvalSettings:
    """How to evaluate (params.yaml ``evaluate``)."""

    mmlu_format: MCFormat = "options"
    mc_headline: Headline = "sum"  # rank by summed log-prob ("sum") or per-token mean ("mean")
    fewshot_k: int = 3
    max_input_length: int = 512
    max_new_tokens: int = 32
    batch_size: int = 32
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    max_examples: int | None = None  # per task (quick looks); None = all
    max_labels: int = 16  # BBH without a chance table: this many distinct targets at most form a label set
    answer_form: AnswerForm = "plain"  # where the answer goes (flanmoe.data.answer_slot): as trained


@dataclass
class SuiteResult:
    """One suite in one mode (zero-/few-shot): per-example records and the summary."""

    suite: str
    mode: str
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    # the headline 0/1 results as the suite averages them: a flat list (mean over examples) or
    # {task: list} (mean of task means); with the suite's chance, for the normalized average's CI
    values: list[float] | dict[str, list[float]] = field(default_factory=list)


class Evaluator:
    """Scores one model (in eval mode) with one tokenizer on the suites."""

    def __init__(self, model, tokenizer, settings: EvalSettings):
        self.model, self.tok, self.s = model, tokenizer, settings
        self.slot = AnswerSlot.of(settings.answer_form, tokenizer)
        self.routing: dict[str, dict[str, RouterStatsAccumulator]] = defaultdict(dict)
        self._is_moe = model.cfg.moe is not None

    # ---------------------------------------------------------------- helpers
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids ending with eos, encoded as the tokenize stage encodes (special tokens parsed)."""
        if not texts:
            return []
        return [e.ids for e in self.tok.encode_batch(list(texts))]

    def encode_prompt(self, texts: Sequence[str]) -> list[list[int]]:
        """Prompts as ``encode``, the answer slot opened at their end (``answer_form``)."""
        return [self.slot.inputs(x) for x in self.encode(texts)]

    def encode_answers(self, texts: Sequence[str]) -> list[list[int]]:
        """Answers (candidates, labels) as the decoder writes them in the answer form."""
        return [self.slot.target(x) for x in self.encode([self.slot.target_text(t) for t in texts])]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def read_answer(self, generated: Sequence[int]) -> str:
        """The answer text of a greedy generation (read out of the answer slot)."""
        return self.decode(self.slot.answer(generated))

    def _hook(self, suite: str, task: str) -> Callable[[dict], None] | None:
        if not self._is_moe:
            return None
        acc = self.routing[suite].setdefault(task, RouterStatsAccumulator())
        return acc.add

    def _cap(self, n: int) -> int:
        return n if self.s.max_examples is None else min(n, self.s.max_examples)

    def routing_summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{suite: {task: {layer: {"expert_fraction": [...], "dropped_fraction", "entropy"}}}}``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for suite, tasks in self.routing.items():
            for task, acc in tasks.items():
                flat = acc.reduce()
                layers: dict[str, Any] = {}
                for key, value in flat.items():
                    layer, _, what = key.partition("/")
                    if layer == "moe":
                        continue
                    entry = layers.setdefault(layer, {"expert_fraction": []})
                    if what.startswith("expert_fraction/"):
                        entry["expert_fraction"].append(round6(value))
                    else:
                        entry[what] = round6(value)
                out.setdefault(suite, {})[task] = layers
        return out

    # ---------------------------------------------------------------- multiple choice (MMLU schema)
    def mmlu(
        self, splits: Mapping[str, Any], shots: int, split: str = "test", suite: str = "mmlu"
    ) -> SuiteResult:
        """Multiple choice by log-likelihood; ``shots`` exemplars from ``dev`` of the same subject."""
        s = self.s
        mode = "few_shot" if shots else "zero_shot"
        if split not in splits:
            raise ValueError(f"{suite}: no {split!r} split (splits: {sorted(splits)})")
        rows = splits[split]
        dev_by_subject: dict[str, list[dict]] = defaultdict(list)
        if shots:
            if "dev" not in splits:
                raise ValueError(f"{suite}: few-shot needs a 'dev' split (splits: {sorted(splits)})")
            for r in splits["dev"]:
                dev_by_subject[r["subject"]].append(r)
        items = self.subject_items(rows)
        for r in items:
            if not 0 <= r["answer"] < len(r["choices"]):
                raise ValueError(
                    f"{suite}: answer {r['answer']} out of range for {len(r['choices'])} choices"
                )
        queries = [mc_prompt(r["question"], r["choices"], s.mmlu_format) for r in items]
        exemplars = [
            [
                exemplar(
                    mc_prompt(d["question"], d["choices"], s.mmlu_format),
                    mc_candidates(d["choices"], s.mmlu_format)[d["answer"]],
                )
                for d in dev_by_subject[r["subject"]][:shots]
            ]
            for r in items
        ]
        enc = encode_prompts(self.encode_prompt, queries, exemplars, s.max_input_length)
        cands = [mc_candidates(r["choices"], s.mmlu_format) for r in items]
        return self.multiple_choice(suite, mode, items, enc, cands, [self.encode_answers(c) for c in cands])

    def subject_items(self, rows) -> list[dict]:
        """``rows`` (each with a ``subject``) grouped by subject in sorted order, at most
        ``max_examples`` per subject."""
        by_subject: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_subject[r["subject"]].append(r)
        return [
            r for subj in sorted(by_subject) for r in by_subject[subj][: self._cap(len(by_subject[subj]))]
        ]

    def multiple_choice(
        self,
        suite: str,
        mode: str,
        items: Sequence[Mapping[str, Any]],
        enc: Sequence[Encoded],
        cands: Sequence[Sequence[str]],
        cand_ids: Sequence[Sequence[Sequence[int]]],
        headline: Headline | None = None,
        prompts: Sequence[str] | None = None,
    ) -> SuiteResult:
        """Score each item's candidates (``cand_ids``, texts ``cands``) given its prompt ``enc``; the
        pick is the candidate of highest summed (``headline`` "sum") or per-token mean log-prob
        (default: ``mc_headline``). ``items``: rows with ``subject``, ``choices``, ``answer``;
        ``prompts``: the records' prompt texts (default: the decoded prompt ids)."""
        s = self.s
        headline = headline or s.mc_headline
        scores: list = [None] * len(items)
        for subject in sorted({r["subject"] for r in items}):  # routing is recorded per subject
            idx = [i for i, r in enumerate(items) if r["subject"] == subject]
            got = score_candidates(
                self.model,
                [enc[i].ids for i in idx],
                [cand_ids[i] for i in idx],
                s.batch_size,
                self._hook(suite, subject),
            )
            for i, g in zip(idx, got, strict=True):
                scores[i] = g
        result = SuiteResult(suite, mode)
        correct: dict[str, list[float]] = defaultdict(list)
        correct_mean: dict[str, list[float]] = defaultdict(list)
        correct_sum: dict[str, list[float]] = defaultdict(list)
        truncated: dict[str, int] = defaultdict(int)
        answers: dict[str, list[str]] = defaultdict(list)
        chance: dict[str, list[float]] = defaultdict(list)
        texts = [self.decode(e.ids) for e in enc] if prompts is None else prompts
        for r, e, c, sc, text in zip(items, enc, cands, scores, texts, strict=True):
            by_sum = max(range(len(sc)), key=lambda j: sc[j].logprob)
            by_mean = max(range(len(sc)), key=lambda j: sc[j].mean_logprob)
            pick = by_sum if headline == "sum" else by_mean
            subj = r["subject"]
            correct[subj].append(float(pick == r["answer"]))
            correct_sum[subj].append(float(by_sum == r["answer"]))
            correct_mean[subj].append(float(by_mean == r["answer"]))
            truncated[subj] += e.truncated
            answers[subj].append(str(r["answer"]))
            chance[subj].append(1.0 / len(r["choices"]))
            result.records.append(
                {
                    "suite": suite,
                    "task": subj,
                    "mode": mode,
                    "shots": e.shots,
                    "prompt": text,
                    "target": c[r["answer"]],
                    "prediction": c[pick],
                    "correct": pick == r["answer"],
                    "truncated": e.truncated,
                    "logprob_sum": [round6(x.logprob) for x in sc],
                    "logprob_mean": [round6(x.mean_logprob) for x in sc],
                }
            )
        result.summary = summarize(
            correct,
            {t: sum(v) / len(v) for t, v in chance.items()},
            {t: best_constant(v)[1] for t, v in answers.items()},
            truncated,
            s,
            average="examples",
            extra={"acc_sum": correct_sum, "acc_mean": correct_mean},
        )
        result.values = [x for t in sorted(correct) for x in correct[t]]
        return result

    # ---------------------------------------------------------------- exact match (BBH schema)
    def bbh(
        self,
        tasks: Mapping[str, Any],
        shots: int,
        chance: Mapping[str, float] | None = None,
        suite: str = "bbh",
    ) -> SuiteResult:
        """Greedy generation, BBH exact match; ``shots`` exemplars from the same task (never the
        evaluated example itself), drawn with a seeded RNG per (task, example).

        ``chance``: each task's chance level (a task it lacks: 0), e.g. the embedded suite's table;
        None infers it from each task's answer space (``flanmoe.eval.answer_space``: options listed in
        the input, a small label set, or free-form), written beside it as ``chance_basis``."""
        s = self.s
        mode = "few_shot" if shots else "zero_shot"
        result = SuiteResult(suite, mode)
        inferred: dict[str, tuple[float, str]] = {}
        correct: dict[str, list[float]] = {}
        truncated: dict[str, int] = {}
        baselines: dict[str, float] = {}
        for task in sorted(tasks):
            ds = tasks[task]
            inputs, targets = list(ds["input"]), [str(t) for t in ds["target"]]
            n = self._cap(len(inputs))
            exemplars = []
            for i in range(n):
                others = [j for j in range(len(inputs)) if j != i]
                rng = random.Random(f"{s.seed}-{task}-{i}")
                pick = rng.sample(others, min(shots, len(others)))
                exemplars.append([exemplar(inputs[j], targets[j]) for j in pick])
            enc = encode_prompts(self.encode_prompt, inputs[:n], exemplars, s.max_input_length)
            gen = generate(
                self.model,
                [e.ids for e in enc],
                s.max_new_tokens,
                s.batch_size,
                self._hook(suite, task),
            )
            preds = [self.read_answer(g) for g in gen]
            correct[task] = [float(exact_match(p, t)) for p, t in zip(preds, targets[:n], strict=True)]
            truncated[task] = sum(e.truncated for e in enc)
            baselines[task] = best_constant(targets[:n])[1]
            if chance is None:  # the options of the scored examples; the labels of the whole task
                inferred[task] = task_chance(inputs[:n], targets, s.max_labels)
            for e, p, t, ok in zip(enc, preds, targets[:n], correct[task], strict=True):
                result.records.append(
                    {
                        "suite": suite,
                        "task": task,
                        "mode": mode,
                        "shots": e.shots,
                        "prompt": self.decode(e.ids),
                        "target": t,
                        "prediction": p,
                        "normalized_prediction": normalize_answer(p, t),
                        "correct": bool(ok),
                        "truncated": e.truncated,
                    }
                )
        if chance is None:
            ch = {t: c for t, (c, _) in inferred.items()}
        else:
            ch = {t: chance.get(t, 0.0) for t in correct}
        result.summary = summarize(correct, ch, baselines, truncated, s, average="tasks")
        for task, (_, basis) in inferred.items():
            result.summary["tasks"][task]["chance_basis"] = basis
        result.values = correct
        return result

    # ---------------------------------------------------------------- (inputs, targets) pairs
    def pairs(
        self,
        suite: str,
        rows: Sequence[Mapping[str, str]],
        chance: Mapping[str, float] | None = None,
        labels: Mapping[str, Sequence[str]] | None = None,
    ) -> SuiteResult:
        """Exact match of greedy generations on ``rows`` (``inputs`` or the tokenize stage's
        ``input_ids``, ``targets``, ``task``).

        A task with a label set in ``labels`` (a classification task) is scored by rank
        classification instead: the label of highest log-likelihood (accuracy); the exact match of
        its generation is kept as ``exact_match`` beside it. The suite's score is the mean over
        every pair (each task's own score is in ``tasks``).
        """
        s = self.s
        result = SuiteResult(suite, "zero_shot")
        by_task: dict[str, list[Mapping[str, str]]] = defaultdict(list)
        for r in rows:
            by_task[r["task"]].append(r)
        correct: dict[str, list[float]] = {}
        em: dict[str, list[float]] = {}
        truncated: dict[str, int] = {}
        baselines: dict[str, float] = {}
        for task in sorted(by_task):
            items = by_task[task][: self._cap(len(by_task[task]))]
            targets = [str(r["targets"]) for r in items]
            if all("input_ids" in r for r in items):  # already encoded by the tokenize stage: as is
                enc = [Encoded(list(r["input_ids"]), 0, False) for r in items]
            else:
                enc = encode_prompts(
                    self.encode_prompt, [r["inputs"] for r in items], None, s.max_input_length
                )
            hook = self._hook(suite, task)
            preds = [
                self.read_answer(g)
                for g in generate(self.model, [e.ids for e in enc], s.max_new_tokens, s.batch_size, hook)
            ]
            em[task] = [float(exact_match(p, t)) for p, t in zip(preds, targets, strict=True)]
            label_set = list((labels or {}).get(task) or [])
            picks: list[str | None] = [None] * len(items)
            if label_set:
                label_ids = self.encode_answers(label_set)
                sc = score_candidates(
                    self.model, [e.ids for e in enc], [label_ids] * len(items), s.batch_size
                )
                picks = [label_set[max(range(len(x)), key=lambda j: x[j].logprob)] for x in sc]
                correct[task] = [float(p == t.strip()) for p, t in zip(picks, targets, strict=True)]
            else:
                correct[task] = em[task]
            truncated[task] = sum(e.truncated for e in enc)
            baselines[task] = best_constant(targets)[1]
            for e, p, pick, t, ok in zip(enc, preds, picks, targets, correct[task], strict=True):
                rec = {
                    "suite": suite,
                    "task": task,
                    "mode": "zero_shot",
                    "shots": 0,
                    "prompt": self.decode(e.ids),
                    "target": t,
                    "prediction": pick if pick is not None else p,
                    "correct": bool(ok),
                    "truncated": e.truncated,
                }
                if pick is not None:
                    rec["generation"] = p
                result.records.append(rec)
        ch = {t: (chance or {}).get(t, 0.0) for t in correct}
        result.summary = summarize(
            correct, ch, baselines, truncated, s, average="examples", extra={"exact_match": em}
        )
        result.summary.update(options_summary(result.records))
        for task in result.summary["tasks"]:
            result.summary["tasks"][task]["metric"] = (
                "accuracy" if (labels or {}).get(task) else "exact_match"
            )
        result.values = [x for t in sorted(correct) for x in correct[t]]
        return result


def label_set(targets: Sequence[str], max_labels: int = 16) -> list[str] | None:
    """The labels of a classification task (its distinct targets, sorted), or None when the targets
    are open-ended (more than ``max_labels`` distinct values)."""
    values = sorted({str(t).strip() for t in targets})
    return values if len(values) <= max_labels else None


__all__ = ["EvalSettings", "Evaluator", "SuiteResult", "label_set", "summarize"]
