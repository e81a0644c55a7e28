"""Extra replicates (``base.extra_seeds``) of some archs only: the report aggregates each arch's
pretrained and instruction-tuned scores over its own seeds, fine-tuned ones over ``base.seeds``, and
pairs two models over the seeds both have. Without extra seeds it is byte for byte the report the code
wrote before they existed (``tests/fixtures/report_extra_seeds``, written by that code from this tree)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flanmoe.report.heldout_pairs import SEED_T
from flanmoe.report.power import seed_interval
from flanmoe.report.seeds import aggregate
from tests.stage_helpers import REPORT_HOST, run_stage, write_params
from tests.test_heldout_pairs import SKILL, metrics_of, model_records
from tests.test_report import (
    SCENARIOS,
    TASKS,
    curve,
    finetune_metrics,
    md_table,
    md_table_head,
    numbers,
    pretrain_metrics,
    routing_json,
)

BASE, EXTRA = [1, 2], [3, 4]  # expert_choice runs BASE; dense and switch BASE and EXTRA
ARCHS = ["dense", "switch", "expert_choice"]
SKILLS = {**SKILL, "expert_choice-pretrain": 0.30, "expert_choice-instruct": 0.46}
GOLDEN = Path(__file__).parent / "fixtures" / "report_extra_seeds"


def write_tree(work: Path, extra_seeds: list[int] | None) -> dict[str, dict[int, dict]]:
    """Every input of the report for seeds BASE (all archs) and EXTRA (dense, switch: pretrain and
    evaluate files only), whatever ``extra_seeds`` says; params with ``base.extra_seeds`` (None: the
    params of the code before extra seeds, without the key). Returns each model's metrics per seed."""
    base = {"seeds": BASE}
    if extra_seeds is not None:
        base |= {"extra_seeds": extra_seeds, "extra_archs": ["dense", "switch"]}
    params = write_params(work, base=base, archs={"run": ARCHS})
    if extra_seeds is None:
        for key in ("extra_seeds", "extra_archs"):
            params["base"].pop(key, None)
        import yaml

        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out: dict[str, dict[int, dict]] = {}

    def put(path: Path, obj) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))

    for i, seed in enumerate(BASE + EXTRA):
        s = f"s{seed}"
        for arch in ARCHS:
            if seed in EXTRA and arch == "expert_choice":
                continue
            dense = arch == "dense"
            put(work / "metrics/pretrain" / s / f"{arch}.json", pretrain_metrics(3229440 if dense else 5984000,
                3229440 if dense else 3231488, 1726873.6 if dense else 1728921.6))  # fmt: skip
            for model in ("pretrain", "instruct"):
                name = f"{arch}-{model}"
                rows = model_records(SKILLS[name] + 0.03 * i * (1 if arch == "switch" else -1), seed)
                out.setdefault(name, {})[seed] = metrics_of(rows)
                put(work / "metrics/evaluate" / s / f"{name}.json", out[name][seed])
                put(
                    work / "evals" / s / name / "predictions.jsonl",
                    "".join(json.dumps(r) + "\n" for r in rows),
                )
                put(work / "plots" / model / s / f"{arch}.json", curve(4, 5.0))
            if seed in EXTRA:
                continue
            for task in TASKS:
                for scenario in SCENARIOS:
                    name = f"{arch}-{task}-{scenario}"
                    score = 0.5 + 0.1 * i + (0.2 if arch == "switch" else 0.0)
                    put(
                        work / "metrics/evaluate" / s / f"{name}.json",
                        finetune_metrics((score, score - 0.1, score + 0.1), 0.5),
                    )
                    put(work / "plots/finetune" / s / f"{name}.json", curve(3, 2.0, 1))
            if arch != "dense" and seed == BASE[0]:
                put(work / "evals" / s / f"{arch}-instruct" / "routing.json", routing_json())
    return out


def _report(work: Path) -> dict[str, str]:
    md = (work / "docs" / "report" / "report.md").read_text()
    return {
        "report.md": REPORT_HOST.sub(" Run on <this machine>.", md),
        "report.json": (work / "metrics" / "report.json").read_text(),
    }


def _avg(metrics: dict, seed: int) -> float:
    return metrics[seed]["normalized_average"]["zero_shot"]["score"]


def test_each_arch_over_its_own_seeds_and_pairs_over_shared_seeds(tmp_path):
    per_seed = write_tree(tmp_path, EXTRA)
    run_stage("report", tmp_path)
    md = (tmp_path / "docs" / "report" / "report.md").read_text()
    assert "mean over 2 training seeds (base.seeds; dense and switch 4 with base.extra_seeds" in md
    assert (
        "seeds 1, 2 (mean over 2 seeds; the expert-load figures: seed 1); dense, switch also seeds 3, 4" in md
    )
    # the table: dense and switch over 4 seeds, expert_choice over 2; fine-tuning over base.seeds
    head = md_table_head(md, "## Held-out evaluation")
    col = head.index("normalized avg 0-shot")
    rows = md_table(md, "## Held-out evaluation")
    for arch, seeds in (("dense", BASE + EXTRA), ("switch", BASE + EXTRA), ("expert_choice", BASE)):
        agg = aggregate([per_seed[f"{arch}-instruct"][s] for s in seeds])["normalized_average"]["zero_shot"]
        row = next(r for r in rows if r[0] == arch and r[1] == "instruction-tuned")
        assert numbers(row[col])[:3] == pytest.approx(
            [round(agg[k], 1) for k in ("score", "score_lo", "score_hi")]
        )
    found = json.loads((tmp_path / "metrics" / "report.json").read_text())["findings"]

    def check(finding: str, key: str, a: str, b: str, seeds: list[int]) -> None:
        got = found[finding]["comparisons"][key]
        want = seed_interval([_avg(per_seed[a], s) - _avg(per_seed[b], s) for s in seeds])
        assert got["interval"] == SEED_T
        assert [got["value"], got["lo"], got["hi"]] == pytest.approx([want.value, want.lo, want.hi], abs=2e-3)

    check(
        "moe_over_dense_heldout", "switch-dense/zero_shot", "switch-instruct", "dense-instruct", BASE + EXTRA
    )
    check("routers", "expert_choice-switch/zero_shot", "expert_choice-instruct", "switch-instruct", BASE)
    check("it_improves_heldout", "dense/zero_shot", "dense-instruct", "dense-pretrain", BASE + EXTRA)
    check(
        "it_improves_heldout",
        "expert_choice/zero_shot",
        "expert_choice-instruct",
        "expert_choice-pretrain",
        BASE,
    )
    # fine-tuning over base.seeds: the files of the extra seeds are not read, and none is needed
    ft = json.loads((tmp_path / "metrics" / "report.json").read_text())["finetune_gain"]
    assert set(ft) == set(ARCHS)
    # an extra seed's file missing: exit 2, naming it
    (tmp_path / "metrics" / "evaluate" / "s4" / "switch-instruct.json").unlink()
    proc = run_stage("report", tmp_path, check=False)
    assert proc.returncode == 2 and "metrics/evaluate/s4/switch-instruct.json: missing" in proc.stderr


def test_without_extra_seeds_the_report_is_the_one_before_them(tmp_path):
    """The same tree (the extra seeds' files present, unread) with ``base.extra_seeds: []`` gives the
    report of a tree without the key (the fixture was first written by the code before extra seeds,
    then refreshed when the IT-gain cells became paired; REFRESH_EXTRA_SEEDS_GOLDEN=<dir of a code>
    rewrites it: its stage runs on PYTHONPATH=<dir>, without the key)."""
    old = os.environ.get("REFRESH_EXTRA_SEEDS_GOLDEN")
    if old:
        write_tree(tmp_path, None)
        run_stage("report", tmp_path, PYTHONPATH=old)
        for name, text in _report(tmp_path).items():
            (GOLDEN / name).write_text(text)
    write_tree(tmp_path, [])
    run_stage("report", tmp_path)
    for name, text in _report(tmp_path).items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from the report before extra seeds"
