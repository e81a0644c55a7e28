"""The report: its table repeats the metrics files' numbers, its gains follow MOVER, its findings follow
the CIs, its HTML is standalone (but for the PNGs beside it), its figures are readable PNGs drawn the
same byte for byte, and the stage stops with exit 2 (nothing written) on a missing input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from flanmoe.report import (
    ArchResults,
    Estimate,
    ReportFigure,
    ReportInputError,
    build_table,
    difference,
    findings,
    summary,
    to_html,
    to_markdown,
)
from flanmoe.report.stats import DOES_NOT_HOLD, HOLDS, NOT_MEASURED, WITHIN_NOISE
from tests.stage_helpers import REPORT_HOST, run_stage, write_params

TASKS = ["fact_verification", "list_sum"]
SCENARIOS = ["direct", "after_it"]
CHANCE = {"mmlu": 0.25, "bbh": 0.191667}


def suite_block(norm: tuple[float, float, float], chance: float) -> dict:
    """An evaluate-stage block (one suite, one mode) whose normalized score is ``norm``."""
    raw = [chance + n / 100 * (1 - chance) for n in norm]
    return {
        "score": raw[0],
        "score_lo": raw[1],
        "score_hi": raw[2],
        "chance": chance,
        "normalized": norm[0],
        "normalized_lo": norm[1],
        "normalized_hi": norm[2],
        "best_constant": 0.3,
        "n": 280,
        "tasks": {
            "t": {
                "score": raw[0],
                "score_lo": raw[1],
                "score_hi": raw[2],
                "chance": chance,
                "best_constant": 0.3,
            }
        },
    }


def evaluate_metrics(avg: dict[str, tuple[float, float, float]], shift: float = 0.0) -> dict:
    """metrics/evaluate/<arch>-<model>.json: mmlu and bbh around the normalized average ``avg``."""
    out: dict = {"mmlu": {}, "bbh": {}, "normalized_average": {}}
    for mode, (v, lo, hi) in avg.items():
        out["mmlu"][mode] = suite_block((v + shift, lo + shift - 1, hi + shift + 1), CHANCE["mmlu"])
        out["bbh"][mode] = suite_block((v - shift, lo - shift - 2, hi - shift + 2), CHANCE["bbh"])
        out["normalized_average"][mode] = {"score": v, "score_lo": lo, "score_hi": hi}
    return out


def finetune_metrics(score: tuple[float, float, float], chance: float) -> dict:
    block = {"score": score[0], "score_lo": score[1], "score_hi": score[2], "chance": chance, "n": 100}
    return {"finetune": {"zero_shot": {**block, "exact_match": score[0], "tasks": {"x": dict(block)}}}}


def pretrain_metrics(params: int, active: int, flops: float) -> dict:
    return {"params": params, "active_params": active, "flops_per_token": flops, "router": {}}


def both_modes(v, lo, hi) -> dict:
    return {"zero_shot": (v, lo, hi), "few_shot": (v + 1, lo + 1, hi + 1)}


def default_metrics() -> dict[str, dict]:
    """A dense / switch run: IT helps both (switch more), after IT switch beats dense."""
    ft = {
        ("dense", "fact_verification", "direct"): ((0.53, 0.44, 0.63), 0.5),
        ("dense", "fact_verification", "after_it"): ((0.58, 0.49, 0.68), 0.5),
        ("dense", "list_sum", "direct"): ((0.16, 0.09, 0.23), 0.0),
        ("dense", "list_sum", "after_it"): ((0.08, 0.03, 0.14), 0.0),
        ("switch", "fact_verification", "direct"): ((0.485, 0.39, 0.59), 0.5),
        ("switch", "fact_verification", "after_it"): ((0.90, 0.85, 0.95), 0.5),
        ("switch", "list_sum", "direct"): ((0.06, 0.02, 0.11), 0.0),
        ("switch", "list_sum", "after_it"): ((0.61, 0.52, 0.70), 0.0),
    }
    m = {
        "pretrain/dense": pretrain_metrics(3229440, 3229440, 1726873.6),
        "pretrain/switch": pretrain_metrics(5984000, 3231488, 1728921.6),
        "dense-pretrain": evaluate_metrics(both_modes(-11.4, -14.7, -7.8), shift=2),
        "dense-instruct": evaluate_metrics(both_modes(-4.7, -8.8, -1.0), shift=3),
        "switch-pretrain": evaluate_metrics(both_modes(-11.9, -15.2, -8.3)),
        "switch-instruct": evaluate_metrics(both_modes(20.0, 16.0, 24.0)),
    }
    for (arch, task, scenario), (score, chance) in ft.items():
        m[f"{arch}-{task}-{scenario}"] = finetune_metrics(score, chance)
    return m


def arch_results(m: dict[str, dict]) -> list[ArchResults]:
    def one(name: str, moe: bool, twin_of: str | None) -> ArchResults:
        return ArchResults(
            name,
            moe,
            m[f"pretrain/{name}"],
            {k: m[f"{name}-{k}"] for k in ("pretrain", "instruct")},
            {(t, s): m[f"{name}-{t}-{s}"] for t in TASKS for s in SCENARIOS if f"{name}-{t}-{s}" in m},
            twin_of,
        )

    return [one("dense", False, "switch"), one("switch", True, None)]


def md_table(md: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table after ``heading``."""
    lines = md[md.index(heading) :].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


NUM = r"[-+]?\d+(?:\.\d+)?"


def numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(NUM, cell.replace(",", ""))]


def test_table_repeats_the_metrics_numbers():
    m = default_metrics()
    table = build_table(arch_results(m), TASKS, SCENARIOS, fewshot_k=3)
    md = to_markdown(table, findings(table))

    models = {r[0]: r for r in md_table(md, "## Models")}
    for arch in ("dense", "switch"):
        p = m[f"pretrain/{arch}"]
        assert numbers(models[arch][2]) == [p["params"]]
        assert numbers(models[arch][3]) == [p["active_params"]]
        assert numbers(models[arch][4]) == [round(p["flops_per_token"])]
    assert models["dense"][1] == "dense (FLOPs twin of switch)" and models["switch"][1] == "MoE"

    rows = md_table(md, "## Held-out evaluation")
    head = md[md.index("## Held-out evaluation") :].splitlines()[4]
    assert "MMLU 0-shot" in head and "BBH 3-shot" in head and "normalized avg 3-shot" in head
    columns = [(s, mo) for s in ("mmlu", "bbh", "normalized_average") for mo in ("zero_shot", "few_shot")]
    label = {"pretrained only": "pretrain", "instruction-tuned": "instruct"}
    checked = 0
    for row in rows:
        arch, model = row[0], row[1]
        if model == "IT gain":
            continue
        mets = m[f"{arch}-{label[model]}"]
        for (suite, mode), cell in zip(columns, row[2:], strict=True):
            b = mets[suite][mode]
            if suite == "normalized_average":
                expect = [round(b[k], 1) for k in ("score", "score_lo", "score_hi")]
            else:
                expect = [round(b[k], 1) for k in ("normalized", "normalized_lo", "normalized_hi")]
                expect += [round(b["score"], 3), round(b["chance"], 3)]
            assert numbers(cell) == pytest.approx(expect, abs=1e-9), (arch, model, suite, mode, cell)
            checked += 1
    assert checked == 2 * 2 * 6

    ft = {(r[0], r[1]): r for r in md_table(md, "## Single-task fine-tuning")}
    assert len(ft) == 4
    for (arch, task), row in ft.items():
        assert numbers(row[2]) == [m[f"{arch}-{task}-direct"]["finetune"]["zero_shot"]["chance"]]
        for i, scenario in enumerate(SCENARIOS):
            b = m[f"{arch}-{task}-{scenario}"]["finetune"]["zero_shot"]
            assert numbers(row[3 + i]) == [round(b[k], 3) for k in ("score", "score_lo", "score_hi")]


def test_gain_interval_by_hand():
    a, b = Estimate(10.0, 6.0, 15.0), Estimate(2.0, 0.0, 3.0)
    d = difference(a, b)
    assert d.value == 8.0
    assert d.lo == pytest.approx(8 - math.sqrt(4**2 + 1**2))  # a's lower half-width, b's upper
    assert d.hi == pytest.approx(8 + math.sqrt(5**2 + 2**2))  # a's upper half-width, b's lower
    sym = difference(Estimate(5, 2, 8), Estimate(1, -3, 5))  # symmetric: half-widths in quadrature
    assert (sym.lo, sym.hi) == pytest.approx((4 - 5, 4 + 5))

    m = default_metrics()
    table = build_table(arch_results(m), TASKS, SCENARIOS)
    gain = table.it_gain["dense"][("normalized_average", "zero_shot")]
    inst, pre = (
        m["dense-instruct"]["normalized_average"]["zero_shot"],
        m["dense-pretrain"]["normalized_average"]["zero_shot"],
    )
    assert gain.value == pytest.approx(inst["score"] - pre["score"])  # -4.7 - -11.4 = 6.7
    assert gain.lo == pytest.approx(6.7 - math.hypot(-4.7 - -8.8, -7.8 - -11.4))
    assert gain.hi == pytest.approx(6.7 + math.hypot(-1.0 - -4.7, -11.4 - -14.7))
    ft = table.finetune_gain["switch"]["list_sum"]
    assert ft.value == pytest.approx(0.61 - 0.06)
    assert ft.lo == pytest.approx(0.55 - math.hypot(0.09, 0.05))
    rep = summary(table, findings(table))
    assert rep["it_gain"]["dense"]["zero_shot"]["normalized_average"]["value"] == pytest.approx(6.7)
    assert rep["finetune_gain"]["switch"]["list_sum"]["value"] == pytest.approx(0.55)
    json.dumps(rep)  # JSON-able


def _with_switch_instruct(avg: tuple[float, float, float]) -> list[ArchResults]:
    m = default_metrics()
    m["switch-instruct"] = evaluate_metrics(both_modes(*avg))
    return arch_results(m)


@pytest.mark.parametrize(
    ("switch_instruct", "it_improves", "moe_gains_more"),
    [
        ((20.0, 16.0, 24.0), HOLDS, HOLDS),  # +31.9 for switch, +6.7 for dense: far beyond the CIs
        ((-30.0, -34.0, -26.0), DOES_NOT_HOLD, DOES_NOT_HOLD),  # IT hurts switch
        ((-8.0, -12.0, -4.0), WITHIN_NOISE, WITHIN_NOISE),  # +3.9 for switch: CI contains 0
    ],
)
def test_findings_follow_the_intervals(switch_instruct, it_improves, moe_gains_more):
    fs = {f.id: f for f in findings(build_table(_with_switch_instruct(switch_instruct), TASKS, SCENARIOS))}
    assert fs["it_improves_heldout"].verdict == it_improves
    assert {c.key: c.verdict for c in fs["it_improves_heldout"].comparisons}["dense/zero_shot"] == HOLDS
    assert fs["it_gain_moe_over_dense"].verdict == moe_gains_more
    assert len(fs["it_gain_moe_over_dense"].comparisons) == 2  # switch vs its twin dense, both modes


def test_finetune_findings():
    m = default_metrics()
    fs = {f.id: f for f in findings(build_table(arch_results(m), TASKS, SCENARIOS))}
    after = {c.key: c.verdict for c in fs["finetune_moe_over_dense_after_it"].comparisons}
    assert after == {"switch-dense/fact_verification": HOLDS, "switch-dense/list_sum": HOLDS}
    assert fs["finetune_moe_over_dense_after_it"].verdict == HOLDS
    assert fs["finetune_moe_advantage_grows_with_it"].verdict == HOLDS
    # switch after IT back to dense's scores: within noise on one task, below dense on the other
    m["switch-fact_verification-after_it"] = finetune_metrics((0.55, 0.45, 0.65), 0.5)
    m["switch-list_sum-after_it"] = finetune_metrics((0.0, 0.0, 0.01), 0.0)
    fs = {f.id: f for f in findings(build_table(arch_results(m), TASKS, SCENARIOS))}
    after = {c.key: c.verdict for c in fs["finetune_moe_over_dense_after_it"].comparisons}
    assert after == {"switch-dense/fact_verification": WITHIN_NOISE, "switch-dense/list_sum": DOES_NOT_HOLD}
    assert fs["finetune_moe_over_dense_after_it"].verdict == DOES_NOT_HOLD
    # no dense twin in the run: the MoE-vs-dense claims are not measured
    only_switch = [a for a in arch_results(m) if a.name == "switch"]
    fs = {f.id: f for f in findings(build_table(only_switch, TASKS, SCENARIOS))}
    assert fs["it_improves_heldout"].verdict != NOT_MEASURED
    for claim in (
        "it_gain_moe_over_dense",
        "finetune_moe_over_dense_after_it",
        "finetune_moe_advantage_grows_with_it",
    ):
        assert fs[claim].verdict == NOT_MEASURED and fs[claim].why_not_measured
    assert fs["across_seeds"].verdict == NOT_MEASURED


def test_markdown_findings_and_html_standalone():
    table = build_table(arch_results(default_metrics()), TASKS, SCENARIOS, fewshot_k=3)
    fs = findings(table)
    md = to_markdown(table, fs)
    assert "1. **holds** — Instruction tuning raises the held-out normalized average" in md
    assert "### Not measured in this run" in md and "across training seeds" in md
    page = to_html(table, fs)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    for needle in ("http", "<script", "<link", "src=", "@import", "url("):
        assert needle not in page.lower(), needle
    assert page.count("<table>") == 3
    assert "-4.7 [-8.8, -1.0]" in page and "-4.7 [-8.8, -1.0]" in md
    figs = [ReportFigure("headline.png", "Headline", "a caption", "heldout")]
    figs += [ReportFigure("routing_switch.png", "Routing", "another", "training")]
    page, md = to_html(table, fs, figures=figs), to_markdown(table, fs, figures=figs)
    assert re.findall(r'src="([^"]*)"', page) == ["headline.png", "routing_switch.png"]  # beside the page
    assert "http" not in page.lower() and "<script" not in page.lower()
    assert "![Headline](headline.png)" in md and "## Training curves and expert routing" in md
    assert md.index("headline.png") < md.index("## Single-task") < md.index("routing_switch.png")


def test_bbh_chance_bases_named_in_the_caption():
    """Real BBH data: the caption says where each task's chance level came from (its answer space);
    the embedded suite's table-given chances add nothing."""
    plain = build_table(arch_results(default_metrics()), TASKS, SCENARIOS)
    assert plain.chance_bases == {} and "answer space" not in to_markdown(plain, findings(plain))
    m = default_metrics()
    bases = {
        "boolean_expressions": "labels",
        "date_understanding": "options",
        "word_sorting": "free_form",
        "navigate": "labels",
    }
    for key in ("dense-instruct", "dense-pretrain", "switch-instruct", "switch-pretrain"):
        for block in m[key]["bbh"].values():
            block["tasks"] = {t: {**block["tasks"]["t"], "chance_basis": b} for t, b in bases.items()}
    table = build_table(arch_results(m), TASKS, SCENARIOS)
    assert table.chance_bases == {"free_form": 1, "labels": 2, "options": 1}
    note = (
        "BBH chance levels from each task's answer space: none (free-form: chance 0) in 1 task;"
        " its distinct targets (a label set) in 2 tasks; the options listed in the input in 1 task."
    )
    md = to_markdown(table, findings(table))
    assert note in md and md.index("## Held-out evaluation") < md.index(note) < md.index("## Single-task")
    assert note.replace("'", "&#x27;") in to_html(table, findings(table))


def curve(steps: int, start: float, validate_every: int = 2) -> list[dict]:
    """plots/<stage>/<name>.json: a falling loss, validated every ``validate_every`` rows."""
    return [
        {
            "step": 10 * (i + 1),
            "train_loss": start / (1 + i),
            "val_loss": start / (1 + i) + 0.1 if (i + 1) % validate_every == 0 else None,
            "lr": 1e-3,
        }
        for i in range(steps)
    ]


def routing_json(experts: int = 4) -> dict:
    """evals/<arch>-instruct/routing.json: per suite, task and MoE layer the share of tokens per expert."""

    def layer(peak: int) -> dict:
        frac = [0.7 if e == peak else 0.3 / (experts - 1) for e in range(experts)]
        return {"expert_fraction": frac, "entropy": 1.0, "load_max_over_mean": 2.8, "dropped_fraction": 0.0}

    tasks = {"mmlu": ["biology", "history"], "bbh": ["navigate"], "heldin": ["addition", "antonyms"]}
    return {
        suite: {
            t: {"encoder.1": layer(i % experts), "decoder.1": layer((i + 1) % experts)}
            for i, t in enumerate(ts)
        }
        for suite, ts in tasks.items()
    }


def with_router(rows: list[dict]) -> list[dict]:
    """An MoE curve: the trainer's routing-health columns on every row."""
    return [
        {**r, "router_load_max_over_mean": 1.5 - 0.02 * i, "router_dropped_fraction": 0.05 / (1 + i),
         "router_entropy": 1.9 + 0.01 * i}
        for i, r in enumerate(rows)
    ]  # fmt: skip


def figure_inputs() -> tuple[dict, dict]:
    """(routing by MoE arch, training curves by panel) as the stage builds them."""
    curves = {
        "pretrain": {"dense": curve(8, 9.0), "switch": with_router(curve(8, 8.5))},
        "instruct": {"dense": curve(6, 5.0, 3), "switch": with_router(curve(6, 4.0, 3))},
        "finetune fact_verification": {
            f"{a} {s}": curve(3, 2.0, 1) for a in ("dense", "switch") for s in SCENARIOS
        },
    }
    return {"switch": routing_json()}, curves


def write_workspace(
    work: Path, metrics: dict[str, dict], routing: bool = True, seed: str = "s1234", **sections
) -> None:
    """The report's inputs of one seed (``seed``) in ``work``, with the shipped params (archs.run dense,
    switch; tasks fact_verification, list_sum; seeds [1234]), ``sections`` merged in (``write_params``)."""
    write_params(work, **sections)
    for key, obj in metrics.items():
        stage, name = key.split("/", 1) if key.startswith("pretrain/") else ("evaluate", key)
        path = work / "metrics" / stage / seed / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
    names = [f"{stage}/{arch}" for stage in ("pretrain", "instruct") for arch in ("dense", "switch")]
    names += [f"finetune/{a}-{t}-{s}" for a in ("dense", "switch") for t in TASKS for s in SCENARIOS]
    for name in names:
        stage, name = name.split("/")
        (work / "plots" / stage / seed).mkdir(parents=True, exist_ok=True)
        (work / "plots" / stage / seed / f"{name}.json").write_text(json.dumps(curve(4, 5.0)))
    if routing:  # switch is the MoE arch of the shipped params
        (work / "evals" / seed / "switch-instruct").mkdir(parents=True)
        (work / "evals" / seed / "switch-instruct" / "routing.json").write_text(json.dumps(routing_json()))


def assert_png(path: Path, min_width: int = 300) -> None:
    """A PNG of more than 1 KB that matplotlib reads back as an RGBA image at least ``min_width`` wide."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024, path
    assert b"Software" not in data and b"tIME" not in data  # no version or timestamp in the file
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[2] == 4 and img.shape[1] >= min_width and img.shape[0] >= 200, (
        img.shape
    )
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_figures_are_readable_pngs_and_byte_identical(tmp_path):
    from flanmoe.report.plots import write_figures

    table = build_table(arch_results(default_metrics()), TASKS, SCENARIOS, fewshot_k=3)
    routing, curves = figure_inputs()
    (tmp_path / "a").mkdir()
    figs = write_figures(tmp_path / "a", table, routing, curves)
    files = ["headline.png", "it_gain.png", "finetune.png", "routing_switch.png", "routing_health.png"]
    files.append("training_curves.png")
    assert [f.file for f in figs] == files
    assert [f.section for f in figs] == ["heldout", "heldout", "finetune", *["training"] * 3]
    for f in files:
        assert_png(tmp_path / "a" / f)
    (tmp_path / "b").mkdir()
    write_figures(tmp_path / "b", table, routing, curves)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    # nothing fine-tuned, no routing or curves: those figures are left out, not drawn empty
    bare = build_table(arch_results(default_metrics()), [], SCENARIOS)
    (tmp_path / "c").mkdir()
    bare_figs = write_figures(tmp_path / "c", bare)
    assert [f.file for f in bare_figs] == ["headline.png", "it_gain.png"]
    # the IT-gain figure's caption names its intervals: MOVER, or the paired ones the table got
    assert bare_figs[1].caption.endswith("[95% CI: MOVER].")
    bare.it_gain_intervals.update({"seed t", "paired bootstrap"})
    assert write_figures(tmp_path / "c", bare)[1].caption.endswith("[95% CI: paired bootstrap, seed t].")


def test_across_seeds_claim_names_the_archs_with_extra_seeds():
    """One base seed, dense and switch with extra seeds: the across-seeds claim stays unmeasured
    (the ablation archs have one seed) but says which findings are over seeds."""
    table = build_table(
        arch_results(default_metrics()), TASKS, SCENARIOS, seeds=1, arch_seeds={"dense": 8, "switch": 8}
    )
    why = next(f for f in findings(table) if f.id == "across_seeds").why_not_measured
    assert "only dense 8, switch 8 seeds here (base.extra_seeds)" in why
    plain = build_table(arch_results(default_metrics()), TASKS, SCENARIOS)
    assert next(f for f in findings(plain) if f.id == "across_seeds").why_not_measured.startswith(
        "several seeds (base.seeds) aggregated"
    )


def test_stage_writes_report_and_metrics(tmp_path):
    write_workspace(tmp_path, default_metrics())
    proc = run_stage("report", tmp_path)
    assert "it_improves_heldout: holds" in proc.stdout
    md = (tmp_path / "docs" / "report" / "report.md").read_text()
    assert "| switch | instruction-tuned | 20.0 [15.0, 25.0] · acc 0.400 · chance 0.250 |" in md
    assert (tmp_path / "docs" / "report" / "report.html").is_file()
    for png in ("headline", "it_gain", "finetune", "routing_switch", "training_curves"):
        assert (
            f"](figures/{png}.png)" in md
            and f'src="figures/{png}.png"' in (tmp_path / "docs" / "report" / "report.html").read_text()
        )
        assert_png(tmp_path / "docs" / "report" / "figures" / f"{png}.png")
    assert not (tmp_path / "docs" / "report" / "figures" / "routing_dense.png").exists()  # dense: no router
    # the curves here have no router columns: no routing-health figure (nothing drawn empty)
    assert not (tmp_path / "docs" / "report" / "figures" / "routing_health.png").exists()
    rep = json.loads((tmp_path / "metrics" / "report.json").read_text())
    assert rep["findings"]["it_improves_heldout"]["verdict"] == HOLDS
    assert rep["findings"]["it_improves_heldout"]["verdict_code"] == 1
    assert rep["it_gain"]["switch"]["few_shot"]["normalized_average"]["value"] == pytest.approx(31.9)


def test_stage_missing_metrics_exit_2_nothing_written(tmp_path):
    metrics = default_metrics()
    del metrics["switch-list_sum-after_it"]
    write_workspace(tmp_path, metrics)
    proc = run_stage("report", tmp_path, check=False)
    assert proc.returncode == 2
    assert "metrics/evaluate/s1234/switch-list_sum-after_it.json: missing" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "docs").exists()
    assert not (tmp_path / "metrics" / "report.json").exists()
    assert not (tmp_path / "mlruns.db").exists()


def test_missing_routing_of_moe_arch_exit_2_malformed_inputs_named(tmp_path):
    write_workspace(tmp_path, default_metrics(), routing=False)
    proc = run_stage("report", tmp_path, check=False)
    assert proc.returncode == 2
    assert "evals/s1234/switch-instruct/routing.json: missing" in proc.stderr
    assert not (tmp_path / "docs").exists() and not (tmp_path / "metrics" / "report.json").exists()
    from flanmoe.report.training_figures import (  # what the stage checks before drawing
        check_curve,
        check_routing,
    )

    with pytest.raises(ReportInputError, match=r"x.json: mmlu.biology.encoder.1.expert_fraction is not"):
        check_routing({"mmlu": {"biology": {"encoder.1": {"entropy": 1.0}}}}, "x.json")
    with pytest.raises(ReportInputError, match=r"c.json: row 1 needs numbers"):
        check_curve([{"step": 1, "train_loss": 2.0, "val_loss": None}, {"step": 2}], "c.json")
    check_routing(routing_json(), "ok.json")
    check_curve(curve(3, 2.0), "ok.json")
    rows = with_router(curve(3, 2.0))
    del rows[2]["router_entropy"]
    with pytest.raises(ReportInputError, match=r"c.json: row 2 needs numbers router_load_max_over_mean"):
        check_curve(rows, "c.json")


def test_dvc_yaml_report_stage_is_last_and_reads_every_evaluation(repo_root):
    import yaml

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    assert list(stages)[-1] == "report"
    report = stages["report"]
    assert report["cmd"] == "python -m stages.report"
    deps = {"metrics/evaluate", "metrics/pretrain", "plots", "evals", "stages/report.py", "flanmoe/report"}
    assert deps <= set(report["deps"])
    assert {"base.seeds", "archs.run", "finetune.tasks", "finetune.scenarios", "freeze_ablation"} <= set(
        report["params"]
    )
    assert report["outs"] == [{"${report.dir}": {"cache": False}}]  # params.yaml report.dir: docs/report
    assert report["metrics"] == [{"metrics/report.json": {"cache": False}}]
    # the figures are DVC plots (top level: no second output of the same files)
    assert yaml.safe_load((repo_root / "dvc.yaml").read_text())["plots"] == ["${report.dir}/figures"]


# -- the report of a real `make run`, rebuilt from its frozen metrics ---------------------------------

GOLDEN = Path(__file__).parent / "fixtures" / "report"


def test_report_of_fixed_metrics_equals_the_expected_report(tmp_path):
    """The default pipeline's metrics, plots and routing files (frozen in tests/fixtures/report/inputs,
    from the `make run` of 2026-11-24) give exactly the expected report.md and report.json. After an
    intended change to the report, rerun with REFRESH_REPORT_GOLDEN=1 and review the diff."""
    import os
    import shutil

    shutil.copytree(GOLDEN / "inputs", tmp_path, dirs_exist_ok=True)
    run_stage("report", tmp_path)

    from flanmoe.env import cpu_model

    md = (tmp_path / "docs" / "report" / "report.md").read_text()
    assert [m[1] for m in REPORT_HOST.finditer(md)] == [cpu_model()]  # the machine: the one part not golden
    got = {
        "report.md": REPORT_HOST.sub(" Run on <this machine>.", md),
        "report.json": (tmp_path / "metrics" / "report.json").read_text(),
    }
    if os.environ.get("REFRESH_REPORT_GOLDEN"):
        for name, text in got.items():
            (GOLDEN / "expected" / name).write_text(text)
    for name, text in got.items():
        assert text == (GOLDEN / "expected" / name).read_text(), f"{name} differs from the expected one"
    # and the table's numbers are the metrics files' numbers (no copying errors)
    switch = json.loads(
        (GOLDEN / "inputs" / "metrics" / "evaluate" / "s1234" / "switch-instruct.json").read_text()
    )
    bbh = switch["bbh"]["zero_shot"]
    cell = f"{bbh['normalized']:.1f} [{bbh['normalized_lo']:.1f}, {bbh['normalized_hi']:.1f}]"
    assert "| switch | instruction-tuned |" in got["report.md"] and cell in got["report.md"]


# --- seeds (base.seeds): the aggregation over replicates -------------------------------------------


def test_aggregate_over_seeds_by_hand():
    from flanmoe.report.seeds import aggregate, t975

    a = {"score": 0.50, "score_lo": 0.40, "score_hi": 0.62, "chance": 0.25, "n": 100, "name": "x"}
    b = {"score": 0.60, "score_lo": 0.52, "score_hi": 0.70, "chance": 0.25, "n": 100, "name": "y"}
    out = aggregate([{"m": a}, {"m": b}])["m"]
    # mean 0.55; seed half-width t(1) * sd / sqrt(2), sd = 0.0707: 12.706 * 0.05 = 0.6353
    seed_half = 12.706 * math.sqrt(((0.5 - 0.55) ** 2 + (0.6 - 0.55) ** 2) / 1) / math.sqrt(2)
    below, above = (0.10 + 0.08) / 2, (0.12 + 0.10) / 2  # the seeds' own half-widths, each side
    assert out["score"] == pytest.approx(0.55)
    assert out["score_lo"] == pytest.approx(0.55 - math.hypot(below, seed_half))
    assert out["score_hi"] == pytest.approx(0.55 + math.hypot(above, seed_half))
    assert (out["chance"], out["n"], out["name"]) == (0.25, 100, "x")  # equal numbers kept, text: first
    assert aggregate([{"m": a}]) == {"m": a}  # one seed: its own numbers
    # a count that differs between seeds stays a count: the mean per seed, rounded (not 519.875)
    counts = aggregate([{"rows": r} for r in (519, 520, 521, 520, 520, 519, 520, 520)])["rows"]
    assert counts == 520 and isinstance(counts, int)
    assert aggregate([{"x": 1}, {"x": 2.5}])["x"] == pytest.approx(1.75)  # not all counts: a mean
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(100) == 1.96
    # three identical seeds: no training spread, the interval is the seeds' own
    same = aggregate([a, dict(a), dict(a)])
    assert (same["score_lo"], same["score_hi"]) == pytest.approx((0.40, 0.62))


def test_report_stage_aggregates_two_seeds(tmp_path):
    """Two replicates: every table cell is the mean of the seeds, its CI the aggregate's; the seeds
    claim is no longer listed as not measured."""
    from flanmoe.report.seeds import aggregate

    one, two = default_metrics(), default_metrics()
    two["switch-instruct"] = evaluate_metrics(both_modes(10.0, 6.0, 14.0))  # switch's IT varies by seed
    write_workspace(tmp_path, one, seed="s1", base={"seeds": [1, 2]})
    write_workspace(tmp_path, two, seed="s2", base={"seeds": [1, 2]})
    run_stage("report", tmp_path)
    md = (tmp_path / "docs" / "report" / "report.md").read_text()
    assert "seeds 1, 2 (mean over 2 seeds" in md and "mean over 2 training seeds" in md
    assert "hold across training seeds" not in md  # measured now: not in the not-measured list
    agg = aggregate([one["switch-instruct"], two["switch-instruct"]])["normalized_average"]["zero_shot"]
    rows = md_table(md, "## Held-out evaluation")
    row = next(r for r in rows if r[0] == "switch" and r[1] == "instruction-tuned")
    avg_col = [
        i for i, h in enumerate(md_table_head(md, "## Held-out evaluation")) if h == "normalized avg 0-shot"
    ]
    assert numbers(row[avg_col[0]])[:3] == pytest.approx(
        [round(agg["score"], 1), round(agg["score_lo"], 1), round(agg["score_hi"], 1)]
    )
    assert agg["score"] == pytest.approx(15.0) and agg["score_hi"] - agg["score_lo"] > 2 * 12.706 * 5 / 1.5
    # the figures: training curves the mean over both seeds, expert load of the first seed only
    assert "Mean over seeds 1, 2; shaded: their range." in md and "Seed 1 only: expert numbers" in md
    # a seed's file missing: exit 2, naming it
    (tmp_path / "metrics" / "evaluate" / "s2" / "dense-instruct.json").unlink()
    proc = run_stage("report", tmp_path, check=False)
    assert proc.returncode == 2 and "metrics/evaluate/s2/dense-instruct.json: missing" in proc.stderr


def test_mean_curve_by_hand_and_its_band_is_drawn(tmp_path):
    from flanmoe.report.seeds import mean_curve
    from flanmoe.report.style import png_bytes
    from flanmoe.report.training_figures import training_curves

    a = [{"step": 10, "train_loss": 4.0, "val_loss": None, "lr": 1e-3},
         {"step": 20, "train_loss": 3.0, "val_loss": 3.5, "lr": 1e-3},
         {"step": 30, "train_loss": 2.0, "val_loss": None, "lr": 1e-3}]  # fmt: skip
    b = [{"step": 10, "train_loss": 5.0, "val_loss": None, "lr": 1e-3},
         {"step": 20, "train_loss": 2.0, "val_loss": 2.5, "lr": 1e-3}]  # fmt: skip
    rows = mean_curve([a, b])
    assert [r["step"] for r in rows] == [10, 20]  # step 30: not logged by every seed
    assert rows[0]["train_loss"] == 4.5 and (rows[0]["train_loss_min"], rows[0]["train_loss_max"]) == (
        4.0,
        5.0,
    )
    assert rows[0]["val_loss"] is None and "val_loss_min" not in rows[0]
    assert rows[1]["val_loss"] == 3.0 and (rows[1]["val_loss_min"], rows[1]["val_loss_max"]) == (2.5, 3.5)
    assert mean_curve([a]) == a  # one seed: its rows
    with pytest.raises(ValueError):
        mean_curve([])
    # the seeds' range is shaded: the figure differs from the same means without it
    bare = [{k: v for k, v in r.items() if not k.endswith(("_min", "_max"))} for r in rows]
    banded, plain = (png_bytes(training_curves({"pretrain": {"dense": c}})) for c in (rows, bare))
    assert banded != plain


def test_report_stage_with_the_freezing_ablation(tmp_path, monkeypatch):
    """The freezing ablation's fine-tunes are read per seed, become rows of the fine-tuning table and
    panels of the training curves (the unfrozen after-IT curve beside each frozen one)."""
    from stages.report import curve_panels, figure_files, load_metrics

    m = default_metrics()
    for t in TASKS:
        m[f"switch-{t}-after_it-freeze_gate"] = finetune_metrics(
            (0.7, 0.6, 0.8), 0.5 if t != "list_sum" else 0.0
        )
    ablation = {"freeze_ablation": {"archs": ["switch"], "freeze": ["gate"]}}
    for seed in ("s1", "s2"):
        write_workspace(tmp_path, m, seed=seed, base={"seeds": [1, 2]}, **ablation)
        for t in TASKS:
            path = tmp_path / "plots" / "finetune" / seed / f"switch-{t}-after_it-freeze_gate.json"
            path.write_text(json.dumps(curve(4, 3.0 if seed == "s1" else 4.0)))
    run_stage("report", tmp_path)
    md = (tmp_path / "docs" / "report" / "report.md").read_text()
    assert "after IT, gate frozen" in md
    rep = json.loads((tmp_path / "metrics" / "report.json").read_text())
    assert rep["findings"]["freeze_gate"]["verdict"] != NOT_MEASURED

    from flanmoe.config import load_params

    monkeypatch.chdir(tmp_path)  # the stage's paths are relative to the workspace
    params = load_params(tmp_path / "params.yaml")
    panels = curve_panels(params, load_metrics(figure_files(params)))
    frozen = panels["finetune list_sum, switch after IT, freezing"]
    assert list(frozen) == ["after IT", "gate frozen"]
    assert frozen["gate frozen"][0]["train_loss"] == pytest.approx(3.5)  # mean of the seeds' 3.0, 4.0
    assert list(panels["finetune list_sum, direct"]) == ["dense", "switch"]


def md_table_head(md: str, heading: str) -> list[str]:
    lines = md[md.index(heading) :].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    return [c.strip() for c in lines[start].strip("|").split("|")]


# --- routers, aux losses, freezing: the ablation findings ---------------------------------------


def _moe(name: str, router: str, z: float, m: dict) -> ArchResults:
    routing = {"router": router, "decoder_router": "gshard" if router == "expert_choice" else router,
               "num_experts": 8, "load_balance_coef": 0.01, "z_loss_coef": z}  # fmt: skip
    return ArchResults(
        name,
        True,
        pretrain_metrics(1, 1, 1.0),
        {"pretrain": m["switch-pretrain"], "instruct": m[f"{name}-instruct"]},
        {(t, s): m[f"switch-{t}-{s}"] for t in TASKS for s in SCENARIOS} | m.get(f"{name}-freeze", {}),
        routing=routing,
    )


def test_router_aux_loss_and_freeze_findings():
    m = default_metrics()
    m["expert_choice-instruct"] = evaluate_metrics(both_modes(30.0, 27.0, 33.0))  # above every TC arch
    m["gshard-instruct"] = evaluate_metrics(both_modes(20.0, 16.0, 24.0))
    m["st_moe-instruct"] = evaluate_metrics(both_modes(21.0, 17.0, 25.0))  # z-loss: within noise
    m["switch-instruct"] = evaluate_metrics(both_modes(20.0, 16.0, 24.0))
    m["switch-freeze"] = {  # gate frozen: better on both tasks; experts frozen: worse on both
        ("fact_verification", "after_it-freeze_gate"): finetune_metrics((0.97, 0.95, 0.99), 0.5),
        ("list_sum", "after_it-freeze_gate"): finetune_metrics((0.80, 0.75, 0.85), 0.0),
        ("fact_verification", "after_it-freeze_experts"): finetune_metrics((0.60, 0.50, 0.70), 0.5),
        ("list_sum", "after_it-freeze_experts"): finetune_metrics((0.20, 0.12, 0.28), 0.0),
    }
    archs = [
        _moe("switch", "switch", 0.0, m),
        _moe("gshard", "gshard", 0.0, m),
        _moe("st_moe", "st_moe", 0.001, m),
        _moe("expert_choice", "expert_choice", 0.0, m),
    ]
    scen = [*SCENARIOS, "after_it-freeze_gate", "after_it-freeze_experts"]
    by_id = {f.id: f for f in findings(build_table(archs, TASKS, scen, 3))}
    ec = by_id["routers"]
    assert ec.verdict == HOLDS and {c.key for c in ec.comparisons} == {
        f"expert_choice-{b}/{mode}"
        for b in ("switch", "gshard", "st_moe")
        for mode in ("zero_shot", "few_shot")
    }
    z = by_id["aux_losses"]  # st_moe vs gshard only (switch is top-1: not alike)
    assert z.verdict == WITHIN_NOISE and {c.key for c in z.comparisons} == {
        "st_moe-gshard/zero_shot",
        "st_moe-gshard/few_shot",
    }
    assert z.comparisons[0].estimate.value == pytest.approx(1.0)
    gate, experts = by_id["freeze_gate"], by_id["freeze_experts"]
    assert gate.verdict == HOLDS and experts.verdict == HOLDS
    fv = next(c for c in gate.comparisons if c.key == "switch/fact_verification")
    assert fv.estimate == difference(Estimate(0.97, 0.95, 0.99), Estimate(0.90, 0.85, 0.95))
    md = to_markdown(build_table(archs, TASKS, scen, 3), list(by_id.values()))
    assert "after IT, gate frozen" in md and "after IT, experts frozen" in md
    # without the runs they need, the claims are listed as not measured
    plain = {f.id: f for f in findings(build_table(arch_results(default_metrics()), TASKS, SCENARIOS, 3))}
    for fid in ("routers", "aux_losses", "freeze_gate", "freeze_experts", "across_seeds"):
        assert plain[fid].verdict == NOT_MEASURED and plain[fid].why_not_measured


# -- knowledge by exposure ------------------------------------------------------------------------


def task_block(score: float, half: float = 0.04, chance: float = 0.25) -> dict:
    return {
        "score": score,
        "score_lo": score - half,
        "score_hi": score + half,
        "chance": chance,
        "best_constant": 0.3,
    }


def with_probe(m: dict[str, dict], probe: bool = True) -> dict[str, dict]:
    """``m`` with, in every arch-model evaluate dict, a probe section (cloze and question per stratum,
    people_x48 listed before people_x12) and MMLU people and held-out relation subjects (zero-shot);
    scores grow with the stratum, with IT (question, mmlu) and for switch. ``probe=False``: the MMLU
    subjects only."""
    out = json.loads(json.dumps(m))
    for arch, up in (("dense", 0.0), ("switch", 0.05)):
        for model, it in (("pretrain", 0.0), ("instruct", 0.1)):
            d = out[f"{arch}-{model}"]
            if probe:
                d["probe"] = {
                    "cloze": {
                        "score": 0.3,
                        "tasks": {"people_x48": task_block(0.6 + up), "people_x12": task_block(0.4 + up)},
                    },
                    "question": {
                        "score": 0.3,
                        "tasks": {
                            "people_x48": task_block(0.35 + up + it),
                            "people_x12": task_block(0.3 + up + it),
                        },
                    },
                }
            mmlu = d["mmlu"]["zero_shot"]["tasks"]
            mmlu["people_x12"] = task_block(0.26 + up + it)
            mmlu["people_x48"] = task_block(0.28 + up + it)
            mmlu["zoology"] = task_block(0.31 + it, 0.1)
            mmlu["world_geography"] = task_block(0.22 + it, 0.1)
    return out


def test_knowledge_table_rows_and_relations_after_the_heldout_table():
    table = build_table(arch_results(with_probe(default_metrics())), TASKS, SCENARIOS, fewshot_k=3)
    md, page = to_markdown(table, findings(table)), to_html(table, findings(table))
    assert (
        md.index("## Held-out evaluation") < md.index("## Knowledge by exposure") < md.index("## Single-task")
    )
    head = md_table_head(md, "## Knowledge by exposure")
    assert head == ["arch", "model", "measure", "people_x12 (N=12)", "people_x48 (N=48)", "chance"]  # by N
    rows = md_table(md, "## Knowledge by exposure")
    assert len(rows) == 2 * 2 * 3  # arch x model x measure
    by_key = {(r[0], r[1], r[2].split(" (")[0]): r[3:] for r in rows}
    assert by_key[("switch", "instruction-tuned", "probe question")] == [
        "0.450 [0.410, 0.490]",
        "0.500 [0.460, 0.540]",
        "0.250",
    ]
    assert by_key[("dense", "pretrained only", "probe cloze")][:2] == [
        "0.400 [0.360, 0.440]",
        "0.600 [0.560, 0.640]",
    ]
    assert numbers(by_key[("dense", "instruction-tuned", "MMLU-style people, 0-shot")][1]) == pytest.approx(
        [0.38, 0.34, 0.42]
    )
    rel = md_table(md, "Held-out relations (secondary probe)")
    assert md_table_head(md, "Held-out relations (secondary probe)") == [
        "arch",
        "model",
        "world_geography",
        "zoology",
    ]
    assert rel[1] == ["dense", "instruction-tuned", "0.320 [0.220, 0.420]", "0.410 [0.310, 0.510]"]
    assert "<h2>Knowledge by exposure</h2>" in page and "0.450 [0.410, 0.490]" in page
    assert summary(table, findings(table))["knowledge"]["switch"]["instruct"]["question"] == {
        "people_x12": 0.45,
        "people_x48": 0.5,
    }


def test_knowledge_section_skipped_without_probe(tmp_path):
    from flanmoe.report.plots import write_figures

    for metrics in (default_metrics(), with_probe(default_metrics(), probe=False)):  # MMLU people, no probe
        table = build_table(arch_results(metrics), TASKS, SCENARIOS, fewshot_k=3)
        assert table.knowledge is None
        assert "Knowledge by exposure" not in to_markdown(table, findings(table))
        assert "Knowledge by exposure" not in to_html(table, findings(table))
        assert "knowledge" not in summary(table, findings(table))
    assert "exposure_response.png" not in [f.file for f in write_figures(tmp_path, table)]


def test_knowledge_stratum_without_interval_is_named():
    metrics = with_probe(default_metrics())
    del metrics["switch-instruct"]["probe"]["cloze"]["tasks"]["people_x12"]["score_lo"]
    with pytest.raises(
        ReportInputError, match=r"switch-instruct probe\.cloze\.tasks\.people_x12: needs numbers"
    ):
        build_table(arch_results(metrics), TASKS, SCENARIOS)


def test_exposure_figure_drawn_and_byte_identical(tmp_path):
    from flanmoe.report.plots import write_figures

    table = build_table(arch_results(with_probe(default_metrics())), TASKS, SCENARIOS, fewshot_k=3)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        figs = write_figures(tmp_path / sub, table)
    assert [f.file for f in figs] == ["headline.png", "it_gain.png", "exposure_response.png", "finetune.png"]
    assert figs[2].section == "knowledge"
    assert_png(tmp_path / "a" / "exposure_response.png")
    assert (tmp_path / "a" / "exposure_response.png").read_bytes() == (
        tmp_path / "b" / "exposure_response.png"
    ).read_bytes()
    md = to_markdown(table, findings(table), figures=figs)
    section = md[md.index("## Knowledge by exposure") : md.index("## Single-task")]
    assert "](exposure_response.png)" in section


def test_stage_writes_knowledge_section_figure_and_flat_keys(tmp_path):
    write_workspace(tmp_path, with_probe(default_metrics()))
    run_stage("report", tmp_path)
    report = tmp_path / "docs" / "report"
    assert "](figures/exposure_response.png)" in (report / "report.md").read_text()
    assert 'src="figures/exposure_response.png"' in (report / "report.html").read_text()
    assert_png(report / "figures" / "exposure_response.png")
    from flanmoe.config import flatten

    flat = flatten(json.loads((tmp_path / "metrics" / "report.json").read_text()), sep=".")
    keys = {k for k in flat if k.startswith("knowledge.")}
    assert len(keys) == 2 * 2 * 3 * 2  # arch x model x measure x stratum
    assert flat["knowledge.dense.pretrain.cloze.people_x48"] == 0.6
    assert flat["knowledge.switch.instruct.mmlu.people_x12"] == pytest.approx(0.41)


def test_knowledge_cells_over_two_seeds(tmp_path):
    """Two seeds: a stratum's cell is the seeds' mean with the aggregate's CI (training noise added)."""
    from flanmoe.report.seeds import combine

    one, two = with_probe(default_metrics()), with_probe(default_metrics())
    two["dense-pretrain"]["probe"]["cloze"]["tasks"]["people_x48"] = task_block(0.5)  # seed 1: 0.6
    write_workspace(tmp_path, one, seed="s1", base={"seeds": [1, 2]})
    write_workspace(tmp_path, two, seed="s2", base={"seeds": [1, 2]})
    run_stage("report", tmp_path)
    md = (tmp_path / "docs" / "report" / "report.md").read_text()
    row = next(r for r in md_table(md, "## Knowledge by exposure") if r[:2] == ["dense", "pretrained only"])
    mean, lo, hi = combine([0.6, 0.5], [0.56, 0.46], [0.64, 0.54])
    assert numbers(row[4]) == pytest.approx([round(mean, 3), round(lo, 3), round(hi, 3)])
    assert hi - lo > 2 * 12.706 * 0.05 / 2**0.5  # the seeds' spread, not the bootstrap's 0.08
    rep = json.loads((tmp_path / "metrics" / "report.json").read_text())
    assert rep["knowledge"]["dense"]["pretrain"]["cloze"]["people_x48"] == pytest.approx(0.55)


# a held-in zero-shot cell as the evaluate stage writes it
HELDIN_CELL = {
    "score": 0.25,
    "score_lo": 0.2,
    "score_hi": 0.3,
    "n": 40,
    "best_constant": 0.3,
    "options_rows": 20,
    "options_answered": 0.65,
    "options_exact_match": 0.35,
    "tasks": {
        "a": {"score": 0.5, "best_constant": 0.25},  # learned
        "b": {"score": 0.25, "best_constant": 0.25},  # a constant's level: not learned
        "c": {"score": 0.0, "best_constant": 0.5},
    },
}


def test_heldin_rows_count_learned_tasks_and_the_format():
    from flanmoe.report.heldin import heldin_rows

    cell = HELDIN_CELL
    head, rows = heldin_rows({"dense": {"zero_shot": cell}})
    assert len(rows) == 1 and len(rows[0]) == len(head)
    assert rows[0] == [
        "dense",
        "0.250 [0.200, 0.300] (n 40)",
        "0.300",
        "1 of 3",
        "1 of 3",
        "0.650 (n 20)",
        "0.350",
    ]
    assert heldin_rows({})[1] == []


def test_heldin_block_is_read_strictly():
    """The held-in block reaches the report checked: a missing CI bound, a task without its best
    constant or a block without its zero-shot cell is named (exit 2), not skipped or filled in."""
    cell = HELDIN_CELL
    m = default_metrics()
    m["dense-instruct"]["heldin"] = {"zero_shot": cell}
    table = build_table(arch_results(m), TASKS, SCENARIOS)
    assert set(table.heldin) == {"dense"} and "Held-in tasks" in to_markdown(table, findings(table))
    bad = [
        ({"zero_shot": {k: v for k, v in cell.items() if k != "score_lo"}}, "score_lo"),
        (
            {"zero_shot": {**cell, "tasks": {**cell["tasks"], "a": {"score": 0.5}}}},
            r"tasks\.a\.best_constant",
        ),
        ({"few_shot": cell}, "no zero-shot cell"),
    ]
    for block, match in bad:
        m["dense-instruct"]["heldin"] = block
        with pytest.raises(ReportInputError, match=rf"dense-instruct: heldin.*{match}"):
            build_table(arch_results(m), TASKS, SCENARIOS)
