"""Paired differences of the held-out normalized average (flanmoe/report/heldout_pairs.py) and the
findings' power figures: records scored by the evaluate stage's own summary code, so the paired point
estimate must be the difference of the metrics' normalized averages."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict

import numpy as np
import pytest

from flanmoe.eval.suites import EvalSettings, SuiteResult, summarize
from flanmoe.report import ArchResults, build_table, findings
from flanmoe.report.findings import power_note
from flanmoe.report.heldout_pairs import MOVER, PAIRED, SEED_T, contrast, heldout_answers, normalized_average
from flanmoe.report.power import (
    minimum_detectable_effect,
    paired_difference,
    seed_interval,
    seeds_needed,
    std_error_of,
    t_quantile,
)
from flanmoe.report.seeds import aggregate
from flanmoe.report.stats import difference
from stages.evaluate import _collect
from tests.stage_helpers import run_stage
from tests.test_report import default_metrics, pretrain_metrics, write_workspace

# per suite: {task: (questions, chance)}; uneven sizes and chances, so that weighting MMLU by examples
# and BBH by tasks (as flanmoe.eval.suites does) is what makes the records match the metrics
TASKS = {
    "mmlu": {"geo": (30, 0.25), "zoo": (70, 1 / 3), "people_x4": (20, 0.25)},
    "bbh": {"nav": (40, 0.5), "sort": (25, 0.0)},
}
SKILL = {"dense-pretrain": 0.30, "dense-instruct": 0.42, "switch-pretrain": 0.31, "switch-instruct": 0.50}
MODELS = [(a, m) for a in ("dense", "switch") for m in ("pretrain", "instruct")]


def model_records(skill: float, seed: int, noise: float = 0.08) -> list[dict]:
    """One model's held-out records: question q is right when its difficulty (shared by every model
    of the seed) is below ``skill``, give or take the model's own noise."""
    shared = np.random.default_rng(seed)
    own = np.random.default_rng(int(skill * 1000) + 7 * seed)
    rows = []
    for mode, prefix in (("zero_shot", ""), ("few_shot", "Q: A. ")):
        for suite, tasks in TASKS.items():
            for task, (n, _) in tasks.items():
                difficulty = shared.random(n)
                for i, d in enumerate(difficulty):
                    right = d + noise * own.standard_normal() < skill
                    prompt = f"{prefix}{task} question {i % (n - 2)}"  # two prompts asked twice
                    rows.append(
                        {"suite": suite, "mode": mode, "task": task, "prompt": prompt, "correct": bool(right)}
                    )
    rows.append({"suite": "probe", "mode": "cloze", "task": "people_x4", "prompt": "p", "correct": True})
    return rows


def metrics_of(records: list[dict]) -> dict:
    """The evaluate stage's metrics of the records (its own summarize and _collect)."""
    settings = EvalSettings(bootstrap=200)
    results = []
    for mode in ("zero_shot", "few_shot"):
        for suite, tasks in TASKS.items():
            correct: dict[str, list[float]] = defaultdict(list)
            for r in records:
                if (r["suite"], r["mode"]) == (suite, mode):
                    correct[r["task"]].append(float(r["correct"]))
            chance = {t: c for t, (_, c) in tasks.items()}
            average = "examples" if suite == "mmlu" else "tasks"
            summary = summarize(correct, chance, dict.fromkeys(correct, 0.3), {}, settings, average=average)
            values = (
                [x for t in sorted(correct) for x in correct[t]] if average == "examples" else dict(correct)
            )
            results.append(SuiteResult(suite, mode, [], summary, values))
    return _collect(results, settings)[0]


def arch_results(metrics: dict[str, dict]) -> list[ArchResults]:
    pre = {
        "dense": pretrain_metrics(3229440, 3229440, 1726873.6),
        "switch": pretrain_metrics(5984000, 3231488, 1728921.6),
    }
    return [
        ArchResults(
            a, a == "switch", pre[a], {m: metrics[f"{a}-{m}"] for m in ("pretrain", "instruct")}, {}, twin
        )
        for a, twin in (("dense", "switch"), ("switch", None))
    ]


def run_of(seeds: list[int]):
    """(table over ``seeds``, records per (arch, model) per seed, per-seed metrics by model name)."""
    recs = {
        f"{a}-{m}": [model_records(SKILL[f"{a}-{m}"] + 0.03 * i, s) for i, s in enumerate(seeds)]
        for a, m in MODELS
    }
    per_seed = {name: [metrics_of(r) for r in rs] for name, rs in recs.items()}
    table = build_table(
        arch_results({k: aggregate(v) for k, v in per_seed.items()}), [], [], seeds=len(seeds)
    )
    answers = {(a, m): [heldout_answers(r) for r in recs[f"{a}-{m}"]] for a, m in MODELS}
    return table, answers, per_seed


def comparisons(fs) -> dict:
    return {(f.id, c.key): c for f in fs for c in f.comparisons}


def test_one_seed_paired_point_is_the_metrics_difference_and_narrower_than_mover():
    table, answers, per_seed = run_of([1])
    paired, independent = comparisons(findings(table, answers)), comparisons(findings(table))
    keys = {
        ("it_improves_heldout", f"{a}/{m}") for a in ("dense", "switch") for m in ("zero_shot", "few_shot")
    }
    keys |= {
        (f, f"switch-dense/{m}")
        for f in ("moe_over_dense_heldout", "it_gain_moe_over_dense")
        for m in ("zero_shot", "few_shot")
    }
    assert set(paired) == set(independent) == keys
    avg = {
        n: {m: d[0]["normalized_average"][m]["score"] for m in ("zero_shot", "few_shot")}
        for n, d in per_seed.items()
    }
    for (fid, key), c in paired.items():
        mode = key.split("/")[1]
        assert c.power.interval == PAIRED and independent[(fid, key)].power.interval == MOVER
        if fid == "moe_over_dense_heldout":
            expected = avg["switch-instruct"][mode] - avg["dense-instruct"][mode]
        elif fid == "it_improves_heldout":
            arch = key.split("/")[0]
            expected = avg[f"{arch}-instruct"][mode] - avg[f"{arch}-pretrain"][mode]
        else:
            expected = (avg["switch-instruct"][mode] - avg["switch-pretrain"][mode]) - (
                avg["dense-instruct"][mode] - avg["dense-pretrain"][mode]
            )
        assert c.estimate.value == pytest.approx(expected, abs=1e-3)  # the metrics' own difference
        assert c.estimate.value == pytest.approx(independent[(fid, key)].estimate.value, abs=1e-3)
        mover_width = independent[(fid, key)].estimate.hi - independent[(fid, key)].estimate.lo
        assert c.estimate.hi - c.estimate.lo < mover_width  # same questions: errors correlate
        assert c.power.mde == pytest.approx(minimum_detectable_effect(std_error_of(c.estimate)))
        assert c.power.seed_sd is None and c.power.seeds_for_3pt is None
        assert "needs >= 2 seeds" in power_note(c, "points") and power_note(c, "points").startswith(PAIRED)
    headline = paired[("moe_over_dense_heldout", "switch-dense/zero_shot")]
    assert headline.estimate.lo > 0 and headline.verdict == "holds"
    assert (
        independent[("moe_over_dense_heldout", "switch-dense/zero_shot")].estimate.lo < headline.estimate.lo
    )
    d = headline.as_dict()
    assert d["interval"] == PAIRED and d["mde"] == round(headline.power.mde, 4) and "seed_sd" not in d


def test_two_seeds_give_the_seed_t_interval_and_the_seeds_needed():
    table, answers, per_seed = run_of([1, 2])
    got = comparisons(findings(table, answers))[("moe_over_dense_heldout", "switch-dense/zero_shot")]
    diffs = [
        per_seed["switch-instruct"][i]["normalized_average"]["zero_shot"]["score"]
        - per_seed["dense-instruct"][i]["normalized_average"]["zero_shot"]["score"]
        for i in range(2)
    ]
    expected = seed_interval(diffs)
    assert got.power.interval == SEED_T
    assert (got.estimate.value, got.estimate.lo, got.estimate.hi) == pytest.approx(
        (expected.value, expected.lo, expected.hi), abs=2e-3
    )
    sd = float(np.std(diffs, ddof=1))
    assert got.power.seed_sd == pytest.approx(sd, abs=2e-3) and got.power.seeds == 2
    assert got.power.seeds_for_3pt == seeds_needed(got.power.seed_sd, 3.0)
    se = got.power.seed_sd / math.sqrt(2)
    assert got.power.mde == pytest.approx((t_quantile(0.975, 1) + t_quantile(0.8, 1)) * se)
    d = got.as_dict()
    assert d["interval"] == SEED_T and d["seeds_for_3pt"] == got.power.seeds_for_3pt and "seed_sd" in d
    assert f"seeds for a +-3-point CI: {got.power.seeds_for_3pt} (seed SD" in power_note(got, "points")


def test_missing_or_mismatched_records_fall_back_to_mover_labelled():
    table, answers, _ = run_of([1])
    key = ("moe_over_dense_heldout", "switch-dense/zero_shot")
    mover_est = difference(
        table.heldout["switch"]["instruct"][("normalized_average", "zero_shot")].normalized,
        table.heldout["dense"]["instruct"][("normalized_average", "zero_shot")].normalized,
    )
    fallback = comparisons(findings(table))[key]
    assert fallback.estimate == mover_est and fallback.as_dict()["interval"] == MOVER
    assert "needs >= 2 seeds" in power_note(fallback, "points")
    no_dense = {m: a for m, a in answers.items() if m != ("dense", "instruct")}
    assert comparisons(findings(table, no_dense))[key].power.interval == MOVER
    # one question fewer for one model: not the same questions
    dense = heldout_answers(model_records(SKILL["dense-instruct"], 1)[1:])
    assert (
        comparisons(findings(table, {**answers, ("dense", "instruct"): [dense]}))[key].power.interval == MOVER
    )
    # the same questions with one result flipped: not the metrics' own results
    rows = model_records(SKILL["dense-instruct"], 1)
    rows[0]["correct"] = not rows[0]["correct"]
    flipped = {**answers, ("dense", "instruct"): [heldout_answers(rows)]}
    assert comparisons(findings(table, flipped))[key].power.interval == MOVER
    # fine-tuning comparisons are MOVER's with an MDE in score units and no seed figures
    note = power_note(fallback, "score")
    assert note.startswith(MOVER) and "seeds" not in note


def test_contrast_weights_by_hand():
    """MMLU by examples, BBH by tasks: 2 questions of x, 6 of y; BBH tasks u and v weigh alike."""

    def rows(x, y, u, v):
        out = [{"suite": "mmlu", "mode": "zero_shot", "task": t, "prompt": f"{t}{i}", "correct": c}
               for t, cs in (("x", x), ("y", y)) for i, c in enumerate(cs)]  # fmt: skip
        return out + [{"suite": "bbh", "mode": "zero_shot", "task": t, "prompt": f"{t}{i}", "correct": c}
                      for t, cs in (("u", u), ("v", v)) for i, c in enumerate(cs)]  # fmt: skip

    a = heldout_answers(rows([1, 1], [1, 0, 0, 0, 0, 0], [1, 0], [1, 1, 1, 1]))
    b = heldout_answers(rows([0, 0], [0, 0, 0, 0, 0, 0], [0, 0], [1, 1, 1, 0]))
    chance = {"mmlu": 0.25, "bbh": 0.2}
    norm = {
        "a": ((100 * (3 / 8 - 0.25) / 0.75) + 100 * ((0.5 + 1) / 2 - 0.2) / 0.8) / 2,
        "b": ((100 * (0 - 0.25) / 0.75) + 100 * ((0 + 0.75) / 2 - 0.2) / 0.8) / 2,
    }
    models = {("a", "instruct"): [a], ("b", "instruct"): [b]}
    expected = {("a", "instruct"): norm["a"], ("b", "instruct"): norm["b"]}
    suites = normalized_average(chance)
    got = contrast(models, {("a", "instruct"): 1.0, ("b", "instruct"): -1.0}, "zero_shot", suites, expected)
    assert got is not None and got.interval == PAIRED
    assert got.estimate.value == pytest.approx(norm["a"] - norm["b"])
    off = {**expected, ("b", "instruct"): norm["b"] + 0.01}  # metrics not these records: no pairing
    assert (
        contrast(models, {("a", "instruct"): 1.0, ("b", "instruct"): -1.0}, "zero_shot", suites, off) is None
    )


def test_heldout_answers_keeps_repeated_prompts_apart_and_names_a_bad_row():
    rows = [
        {"suite": "bbh", "mode": "zero_shot", "task": "t", "prompt": "same", "correct": True},
        {"suite": "bbh", "mode": "zero_shot", "task": "t", "prompt": "same", "correct": False},
        {"suite": "probe", "mode": "cloze", "task": "people_x4", "prompt": "p"},  # not held out: skipped
    ]
    assert heldout_answers(rows) == {("bbh", "zero_shot"): {"t": {("same", 0): 1.0, ("same", 1): 0.0}}}
    bad = [*rows, {"suite": "mmlu", "mode": "zero_shot", "task": "t", "prompt": "q"}]
    with pytest.raises(ValueError, match=r"x\.jsonl: row 4 \(mmlu\) lacks correct"):
        heldout_answers(bad, "x.jsonl")


def test_weighted_paired_difference_and_t_mde():
    rng = np.random.default_rng(3)
    groups = {
        k: (rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float))
        for k, n in (("x", 30), ("y", 11))
    }
    plain = paired_difference(groups, n_resamples=300, seed=5)
    even = paired_difference(groups, n_resamples=300, seed=5, weights={"x": 0.5, "y": 0.5})
    assert (even.value, even.lo, even.hi) == pytest.approx((plain.value, plain.lo, plain.hi))  # same draws
    w = paired_difference(groups, n_resamples=0, weights={"x": 2.0, "y": -1.0})
    means = {k: float(np.mean(a - b)) for k, (a, b) in groups.items()}
    assert w.value == pytest.approx(2 * means["x"] - means["y"])
    with pytest.raises(ValueError, match="one weight per task"):
        paired_difference(groups, weights={"x": 1.0})
    assert minimum_detectable_effect(1.0, df=4) == pytest.approx(t_quantile(0.975, 4) + t_quantile(0.8, 4))
    assert minimum_detectable_effect(1.0, df=4) > minimum_detectable_effect(1.0)


def _workspace_with_records(tmp_path) -> None:
    metrics = default_metrics()
    recs = {f"{a}-{m}": model_records(SKILL[f"{a}-{m}"], 1234) for a, m in MODELS}
    metrics.update({name: metrics_of(r) for name, r in recs.items()})
    write_workspace(tmp_path, metrics)
    for name, rows in recs.items():
        folder = tmp_path / "evals" / "s1234" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_stage_pairs_the_findings_from_predictions_and_names_bad_records(tmp_path):
    _workspace_with_records(tmp_path)
    run_stage("report", tmp_path)
    rep = json.loads((tmp_path / "metrics" / "report.json").read_text())["findings"]
    headline = rep["moe_over_dense_heldout"]["comparisons"]["switch-dense/zero_shot"]
    assert headline["interval"] == PAIRED and headline["mde"] > 0 and "seeds_for_3pt" not in headline
    ft = rep["finetune_moe_over_dense_after_it"]["comparisons"]["switch-dense/fact_verification"]
    assert ft["interval"] == MOVER and ft["mde"] > 0
    md = (tmp_path / "docs" / "report" / "report.md").read_text()
    assert "(paired bootstrap; MDE " in md and "seeds for a +-3-point CI: needs >= 2 seeds" in md
    # the held-out table's IT-gain cells: the same paired intervals as the finding's
    report = json.loads((tmp_path / "metrics" / "report.json").read_text())
    assert report["it_gain_interval"] == PAIRED and "[95% CI: paired bootstrap]" in md
    for arch in ("dense", "switch"):
        cell = report["it_gain"][arch]["zero_shot"]["normalized_average"]
        finding = rep["it_improves_heldout"]["comparisons"][f"{arch}/zero_shot"]
        assert [cell[k] for k in ("value", "lo", "hi")] == [finding[k] for k in ("value", "lo", "hi")]
    path = tmp_path / "evals" / "s1234" / "dense-instruct" / "predictions.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], "{not json", *lines[3:]]) + "\n")
    proc = run_stage("report", tmp_path, check=False)
    assert proc.returncode == 2 and "dense-instruct/predictions.jsonl: line 3 is not JSON" in proc.stderr
    row = json.loads(lines[0])
    del row["correct"]
    path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    proc = run_stage("report", tmp_path, check=False)
    assert (
        proc.returncode == 2 and "dense-instruct/predictions.jsonl: row 1 (mmlu) lacks correct" in proc.stderr
    )


FT = {  # (arch, scenario): skill on the fine-tuning task's test split
    ("dense", "direct"): 0.40,
    ("dense", "after_it"): 0.45,
    ("switch", "direct"): 0.40,
    ("switch", "after_it"): 0.60,
    ("switch", "after_it-freeze_gate"): 0.62,
}


def finetune_records(skill: float, seed: int) -> list[dict]:
    shared, own = np.random.default_rng(100 + seed), np.random.default_rng(int(skill * 1000) + seed)
    return [
        {
            "suite": "finetune",
            "mode": "zero_shot",
            "task": "fv",
            "prompt": f"claim {i}",
            "correct": bool(d + 0.05 * own.standard_normal() < skill),
        }
        for i, d in enumerate(shared.random(80))
    ]


def finetune_metrics_of(records: list[dict]) -> dict:
    """The evaluate stage's metrics of a fine-tuned model (Evaluator.pairs' summary, _collect)."""
    settings = EvalSettings(bootstrap=200)
    correct = {"fv": [float(r["correct"]) for r in records]}
    summary = summarize(
        correct, {"fv": 0.5}, {"fv": 0.5}, {}, settings, average="examples", extra={"exact_match": correct}
    )
    return _collect([SuiteResult("finetune", "zero_shot", [], summary, correct["fv"])], settings)[0]


def test_finetuning_findings_are_paired_on_the_test_split():
    for seeds in ([1], [1, 2]):
        _, answers, per_seed = run_of(seeds)
        recs = {
            (a, "fv", s): [finetune_records(k + 0.02 * i, x) for i, x in enumerate(seeds)]
            for (a, s), k in FT.items()
        }
        metrics = {k: aggregate([finetune_metrics_of(r) for r in rs]) for k, rs in recs.items()}
        archs = [
            dataclasses.replace(r, finetune={(t, s): m for (a, t, s), m in metrics.items() if a == r.name})
            for r in arch_results({k: aggregate(v) for k, v in per_seed.items()})
        ]
        ft_table = build_table(
            archs, ["fv"], ["direct", "after_it", "after_it-freeze_gate"], seeds=len(seeds)
        )
        all_answers = {**answers, **{k: [heldout_answers(r) for r in rs] for k, rs in recs.items()}}
        paired, independent = comparisons(findings(ft_table, all_answers)), comparisons(findings(ft_table))
        score = {k: m["finetune"]["zero_shot"]["score"] for k, m in metrics.items()}
        expected = {
            ("finetune_moe_over_dense_after_it", "switch-dense/fv"): score[("switch", "fv", "after_it")]
            - score[("dense", "fv", "after_it")],
            ("finetune_moe_advantage_grows_with_it", "switch-dense/fv"): score[("switch", "fv", "after_it")]
            - score[("dense", "fv", "after_it")]
            - score[("switch", "fv", "direct")]
            + score[("dense", "fv", "direct")],
            ("freeze_gate", "switch/fv"): score[("switch", "fv", "after_it-freeze_gate")]
            - score[("switch", "fv", "after_it")],
        }
        for key, value in expected.items():
            c = paired[key]
            assert c.power.interval == (PAIRED if len(seeds) == 1 else SEED_T)
            assert independent[key].power.interval == MOVER
            assert c.estimate.value == pytest.approx(value, abs=1e-6)
            assert c.power.seeds_for_3pt is None and "seeds" not in power_note(
                c, "score"
            )  # scores, not points
            assert (c.power.seed_sd is None) == (len(seeds) == 1)
        if len(seeds) == 1:  # one seed: a bootstrap over the same test questions, narrower than MOVER
            key = ("finetune_moe_over_dense_after_it", "switch-dense/fv")
            assert (
                paired[key].estimate.hi - paired[key].estimate.lo
                < independent[key].estimate.hi - independent[key].estimate.lo
            )


def test_a_seed_spread_too_wide_for_any_count_of_seeds_is_said_so():
    from flanmoe.report.findings import Comparison
    from flanmoe.report.heldout_pairs import Paired
    from flanmoe.report.stats import Estimate

    wide = Paired(Estimate(1.0, -500.0, 502.0), SEED_T, 250.0, 2, 350.0)
    assert wide.seeds_for_3pt is None  # seeds_needed gives up beyond 10,000 seeds
    c = Comparison("k", "a vs b", wide.estimate, "within noise", wide)
    assert "seeds for a +-3-point CI: more than 10,000 (seed SD 350.0)" in power_note(c, "points")
    assert "seeds_for_3pt" not in c.as_dict() and c.as_dict()["seed_sd"] == 350.0
