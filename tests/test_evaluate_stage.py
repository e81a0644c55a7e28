"""Stage `evaluate` on micro shapes: held-out suites zero-/few-shot with CIs and the normalized
average, fine-tuned tasks on their test split, real-schema data, MLflow run and outputs; clear exit-2
errors before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest

from flanmoe.grid import PROBE_MODES
from tests.stage_helpers import (
    FIXTURES,
    TINY_EMBEDDED,
    artifact_paths,
    local_sources,
    logged_datasets,
    run_stage,
    write_params,
)
from tests.test_pretrain_stage import MICRO_MODEL, MICRO_TOKENIZE, tokenized  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

MICRO_EVAL = {"fewshot_k": 2, "bootstrap": 200, "heldin_examples": 8, "max_new_tokens": 8, "batch_size": 4}


def _save_random_model(work, arch: str, dest: str) -> None:
    """A randomly initialised model of ``arch`` exported like a training stage exports one."""
    import torch

    from flanmoe.config import load_params
    from flanmoe.model import build_model, save_pretrained

    params = load_params(work / "params.yaml")
    torch.manual_seed(0)
    model = build_model(params.arch_config(arch), 600)
    save_pretrained(model, work / dest, work / "data" / "tokenized" / "tokenizer.json")


def _workspace(tmp_path, tokenized, **evaluate):  # noqa: F811
    shutil.copytree(tokenized, tmp_path / "data")
    write_params(
        tmp_path,
        prepare={"embedded": TINY_EMBEDDED},
        tokenize=MICRO_TOKENIZE,
        model=MICRO_MODEL,
        instruct={"val_examples": 16},
        evaluate={**MICRO_EVAL, **evaluate},
    )
    return tmp_path


def test_heldout_suites_scores_cis_outputs_and_mlflow(tmp_path, tokenized):  # noqa: F811
    from flanmoe.tracking import search_runs
    from stages.common import dvc_md5

    work = _workspace(tmp_path, tokenized)
    _save_random_model(work, "switch", "models/instruct/s1234/switch")
    proc = run_stage("evaluate", work, args=("models/instruct/s1234/switch",))
    assert "evaluate switch-instruct: mmlu zero_shot" in proc.stdout
    metrics_file = work / "metrics" / "evaluate" / "s1234" / "switch-instruct.json"
    m = json.loads(metrics_file.read_text())
    assert set(m) == {"mmlu", "bbh", "heldin", "probe", "normalized_average"}
    for suite in ("mmlu", "bbh"):
        for mode in ("zero_shot", "few_shot"):
            s = m[suite][mode]
            assert s["score_lo"] <= s["score"] <= s["score_hi"]
            assert s["normalized"] == pytest.approx(
                100 * (s["score"] - s["chance"]) / (1 - s["chance"]), abs=1e-3
            )
            assert s["tasks"]
    assert m["mmlu"]["zero_shot"]["chance"] == pytest.approx(0.25)
    from flanmoe.data.embedded import CHANCE

    # the embedded suite brings its own chance table: used as is, no answer space inferred
    summary = json.loads((work / "evals" / "s1234" / "switch-instruct" / "summary.json").read_text())
    for mode in ("zero_shot", "few_shot"):
        tasks = summary["bbh"][mode]["tasks"]
        assert {t: v["chance"] for t, v in tasks.items()} == {t: round(CHANCE["bbh"][t], 6) for t in tasks}
        assert not any("chance_basis" in v for v in tasks.values())
    # the normalized average is the mean of the two suites' normalized scores
    for mode in ("zero_shot", "few_shot"):
        avg = m["normalized_average"][mode]
        expected = (m["mmlu"][mode]["normalized"] + m["bbh"][mode]["normalized"]) / 2
        assert avg["score"] == pytest.approx(expected, abs=1e-3)
        assert avg["score_lo"] <= avg["score"] <= avg["score_hi"]

    out = work / "evals" / "s1234" / "switch-instruct"
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    n_mmlu = m["mmlu"]["zero_shot"]["n"] + m["mmlu"]["few_shot"]["n"]
    n_bbh = m["bbh"]["zero_shot"]["n"] + m["bbh"]["few_shot"]["n"]
    n_probe = sum(m["probe"][mode]["n"] for mode in PROBE_MODES)
    assert len(records) == n_mmlu + n_bbh + m["heldin"]["zero_shot"]["n"] + n_probe
    assert all(
        {"prompt", "target", "prediction", "correct", "suite", "task", "mode"} <= set(r) for r in records
    )
    zs_bbh = [r["correct"] for r in records if r["suite"] == "bbh" and r["mode"] == "zero_shot"]
    assert m["bbh"]["zero_shot"]["n"] == len(zs_bbh)
    # routing per task of every suite, every MoE layer, fractions summing to one
    routing = json.loads((out / "routing.json").read_text())
    assert set(routing) == {"mmlu", "bbh", "heldin", "probe"}
    assert set(routing["mmlu"]) == set(m["mmlu"]["zero_shot"]["tasks"])
    for layers in routing["bbh"].values():
        assert set(layers) == {"encoder.1", "decoder.1"}
        for layer in layers.values():
            assert sum(layer["expert_fraction"]) == pytest.approx(1, abs=1e-4)

    runs = search_runs("flan-moe", "tags.stage = 'evaluate'", uri=f"sqlite:///{work / 'mlruns.db'}")
    assert len(runs) == 1 and runs[0]["status"] == "FINISHED"
    tags, logged = runs[0]["tags"], runs[0]["metrics"]
    assert (tags["arch"], tags["scenario"], tags["model_stage"]) == ("switch", "it_zero_few", "instruct")
    assert (tags["router"], tags["num_experts"], tags["seed"]) == ("switch", "4", "1234")
    assert (
        tags["model_md5"] == dvc_md5(work / "models" / "instruct" / "s1234" / "switch")
        and "freeze" not in tags
    )
    assert logged["mmlu/zero_shot/score"] == m["mmlu"]["zero_shot"]["score"]
    tokenized_dir = work / "data" / "tokenized"
    assert {
        name: (d["digest"], d["source"]["uri"], d["context"])
        for name, d in logged_datasets(work, runs[0]["run_id"]).items()
    } == {
        f"data/tokenized/{s}": (dvc_md5(tokenized_dir / s), f"data/tokenized/{s}", "evaluation")
        for s in ("mmlu", "bbh", "flan", "probe")  # flan: the held-in pairs
    }
    files = artifact_paths(work, runs[0]["run_id"])
    assert {"metrics/evaluate/s1234/switch-instruct.json", "evaluation/summary.json"} <= files

    # same params, same model, same bytes (dvc.lock stays put on a rerun)
    before = metrics_file.read_bytes()
    run_stage("evaluate", work, args=("models/instruct/s1234/switch",))
    assert metrics_file.read_bytes() == before


def test_finetuned_task_scored_on_its_test_split(tmp_path, tokenized):  # noqa: F811
    work = _workspace(tmp_path, tokenized)
    _save_random_model(work, "dense", "models/finetune/s1234/dense-fact_verification-direct")
    run_stage(
        "evaluate",
        work,
        args=("models/finetune/s1234/dense-fact_verification-direct", "--task", "fact_verification"),
    )
    m = json.loads(
        (work / "metrics" / "evaluate" / "s1234" / "dense-fact_verification-direct.json").read_text()
    )
    s = m["finetune"]["zero_shot"]
    import datasets

    test = datasets.load_from_disk(str(work / "data" / "tokenized" / "finetune" / "fact_verification"))[
        "test"
    ]
    assert s["n"] == len(test)
    assert s["tasks"]["fact_verification"]["chance"] == 0.5  # the embedded suite's CHANCE
    records = [
        json.loads(x)
        for x in (work / "evals" / "s1234" / "dense-fact_verification-direct" / "predictions.jsonl").open()
    ]
    labels = {t.strip() for t in test["targets"]}
    # true/false: a classification task, scored by ranking the labels (every prediction is a label)
    assert {r["prediction"] for r in records} <= labels
    assert s["score"] == pytest.approx(sum(r["correct"] for r in records) / len(records), abs=1e-6)
    assert (
        not (work / "evals" / "s1234" / "dense-fact_verification-direct" / "routing.json")
        .read_text()
        .strip("{}\n")
    )

    from flanmoe.tracking import search_runs

    (run,) = search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}")
    tags = run["tags"]
    assert (tags["arch"], tags["router"], tags["num_experts"]) == ("dense", "dense", "0")
    assert (tags["task"], tags["scenario"], tags["freeze"]) == ("fact_verification", "direct", "none")
    (name,) = logged_datasets(work, run["run_id"])
    assert name == "data/tokenized/finetune/fact_verification"


def test_real_schema_sources_score_through_the_same_code(tmp_path):
    """BBH in the BIG-Bench-Hard JSON layout and MMLU in the cais/mmlu layout, prepared from local
    files: chance is 1/len(choices) for multiple choice; for BBH it comes from each task's answer space
    (options in the input, a label set, or free-form: 0), with its basis in summary.json."""
    from tests.test_answer_space import SPACES

    bbh = {
        "kind": "local",
        "path": str(FIXTURES / "bbh_answer_space") + "/{config}.json",
        "field": "examples",
        "configs": sorted(SPACES),
    }
    write_params(
        tmp_path,
        prepare={**local_sources(), "bbh": bbh, "embedded": TINY_EMBEDDED},
        tokenize=MICRO_TOKENIZE,
        model=MICRO_MODEL,
        evaluate={**MICRO_EVAL, "suites": ["mmlu", "bbh"]},
    )
    run_stage("prepare", tmp_path)
    run_stage("tokenize", tmp_path)
    _save_random_model(tmp_path, "dense", "models/pretrain/s1234/dense")
    run_stage("evaluate", tmp_path, args=("models/pretrain/s1234/dense",))
    m = json.loads((tmp_path / "metrics" / "evaluate" / "s1234" / "dense-pretrain.json").read_text())
    summary = json.loads((tmp_path / "evals" / "s1234" / "dense-pretrain" / "summary.json").read_text())
    import datasets

    tokenized_bbh = datasets.load_from_disk(str(tmp_path / "data" / "tokenized" / "bbh"))
    assert set(m["bbh"]["zero_shot"]["tasks"]) == set(tokenized_bbh) == set(SPACES)
    for mode in ("zero_shot", "few_shot"):
        for task, (space, basis) in SPACES.items():
            chance = sum(1 / len(c) if c else 0.0 for c in space) / len(space)
            assert m["bbh"][mode]["tasks"][task]["chance"] == pytest.approx(chance, abs=1e-6), task
            assert summary["bbh"][mode]["tasks"][task]["chance_basis"] == basis
    mmlu = datasets.load_from_disk(str(tmp_path / "data" / "tokenized" / "mmlu"))["test"]
    assert m["mmlu"]["zero_shot"]["n"] == len(mmlu)
    expected_chance = sum(1 / len(c) for c in mmlu["choices"]) / len(mmlu)
    assert m["mmlu"]["zero_shot"]["chance"] == pytest.approx(expected_chance, abs=1e-6)


PROBE_ROWS = [
    {"subject": "people_x8", "prefix": "Alice Toluma plays the ", "suffix": ".",
     "question": "Which instrument does Alice Toluma play?",
     "choices": ["violin", "flute", "harp", "drum"], "answer": 0},
    {"subject": "people_x8", "prefix": "Kim Mumea lives in ", "suffix": ".",
     "question": "Where does Kim Mumea live?", "choices": ["Toluma", "Paris", "Vega", "Sirius"], "answer": 1},
    {"subject": "people_x1", "prefix": "Bob Vega was born in 19", "suffix": "",
     "question": "When was Bob Vega born?", "choices": ["90", "85", "77"], "answer": 2},
]  # fmt: skip


def _write_probe(work, rows=PROBE_ROWS) -> None:
    """A hand-built data/tokenized/probe (replacing one the tokenize stage may have copied)."""
    import datasets

    path = work / "data" / "tokenized" / "probe"
    shutil.rmtree(path, ignore_errors=True)
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))


def test_knowledge_probe_per_stratum_in_both_modes(tmp_path, tokenized):  # noqa: F811
    from flanmoe.tracking import search_runs

    work = _workspace(tmp_path, tokenized, suites=["probe"])
    _write_probe(work)
    _save_random_model(work, "switch", "models/pretrain/s1234/switch")
    proc = run_stage("evaluate", work, args=("models/pretrain/s1234/switch",))
    assert all(f"probe {mode}" in proc.stdout for mode in PROBE_MODES)
    m = json.loads((work / "metrics" / "evaluate" / "s1234" / "switch-pretrain.json").read_text())
    assert set(m) == {"probe"} and set(m["probe"]) == {"cloze", "qa", "question"}  # no normalized average
    records = [
        json.loads(x) for x in (work / "evals" / "s1234" / "switch-pretrain" / "predictions.jsonl").open()
    ]
    assert len(records) == len(PROBE_MODES) * len(PROBE_ROWS)
    for mode in PROBE_MODES:
        s = m["probe"][mode]
        assert s["n"] == len(PROBE_ROWS) and set(s["tasks"]) == {"people_x1", "people_x8"}
        assert s["tasks"]["people_x8"]["chance"] == pytest.approx(0.25)
        assert s["tasks"]["people_x1"]["chance"] == pytest.approx(1 / 3)
        recs = [r for r in records if r["mode"] == mode]
        assert {r["suite"] for r in recs} == {"probe"} and len(recs) == len(PROBE_ROWS)
        for task, t in s["tasks"].items():
            ok = [r["correct"] for r in recs if r["task"] == task]
            assert t["score"] == pytest.approx(sum(ok) / len(ok), abs=1e-6)
            assert t["score_lo"] <= t["score"] <= t["score_hi"] and "best_constant" in t
    cloze = [r["prompt"] for r in records if r["mode"] == "cloze"]
    assert "Alice Toluma plays the<extra_id_0>." in cloze
    (run,) = search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}")
    assert (
        run["metrics"]["probe/cloze/tasks/people_x8/score"]
        == m["probe"]["cloze"]["tasks"]["people_x8"]["score"]
    )
    assert set(logged_datasets(work, run["run_id"])) == {"data/tokenized/probe"}


def test_heldin_scores_every_validation_pair_by_default(tmp_path, tokenized):  # noqa: F811
    """evaluate.heldin_examples null: the held-in suite is the instruct stage's whole validation split."""
    work = _workspace(tmp_path, tokenized, suites=["heldin"], heldin_examples=None)
    _save_random_model(work, "dense", "models/instruct/s1234/dense")
    run_stage("evaluate", work, args=("models/instruct/s1234/dense",))
    m = json.loads((work / "metrics" / "evaluate" / "s1234" / "dense-instruct.json").read_text())
    assert set(m) == {"heldin"} and m["heldin"]["zero_shot"]["n"] == 16  # instruct.val_examples


def test_knowledge_probe_missing_or_malformed_exits_2(tmp_path, tokenized):  # noqa: F811
    work = _workspace(tmp_path, tokenized, suites=["mmlu", "probe"])
    shutil.rmtree(work / "data" / "tokenized" / "probe", ignore_errors=True)
    _save_random_model(work, "dense", "models/pretrain/s1234/dense")
    proc = run_stage("evaluate", work, check=False, args=("models/pretrain/s1234/dense",))
    assert proc.returncode == 2, proc.stderr
    assert "evaluate.suites: 'probe' needs the knowledge probe in data/tokenized/probe" in proc.stderr
    (work / "data" / "tokenized" / "probe").mkdir()  # what tokenize leaves without a probe
    (work / "data" / "tokenized" / "probe" / "NO_PROBE").write_text("none\n")
    proc = run_stage("evaluate", work, check=False, args=("models/pretrain/s1234/dense",))
    assert proc.returncode == 2 and "remove 'probe' from evaluate.suites" in proc.stderr
    shutil.rmtree(work / "data" / "tokenized" / "probe")
    _write_probe(work, [{k: v for k, v in r.items() if k != "question"} for r in PROBE_ROWS])
    proc = run_stage("evaluate", work, check=False, args=("models/pretrain/s1234/dense",))
    assert (
        proc.returncode == 2 and "data/tokenized/probe: test split lacks columns ['question']" in proc.stderr
    )
    assert sorted(p.name for p in work.iterdir()) == ["data", "models", "params.yaml"]


@pytest.mark.parametrize(
    ("args", "evaluate", "expected"),
    [
        (
            ("models/instruct/s1234/nope",),
            {},
            "model_dir: models/instruct/s1234/nope is not an exported model directory",
        ),
        (
            ("models/finetune/s1234/dense-fact_verification-direct", "--task", "no_such_task"),
            {},
            "--task: 'no_such_task' is not in data/tokenized/finetune",
        ),
        (
            ("models/finetune/s1234/dense-fact_verification-direct",),
            {"mmlu_format": "bogus"},
            "evaluate.mmlu_format",
        ),
        (
            ("models/finetune/s1234/dense-fact_verification-direct",),
            {"suites": ["mmlu", "glue"]},
            "evaluate.suites",
        ),
        (
            ("models/instruct/s1234/nope",),
            {"heldin_examples": 17},
            "evaluate.heldin_examples: 17 > instruct.val_examples 16",
        ),
        (
            ("models/finetune/s1234/dense-fact_verification-direct", "--bogus"),
            {},
            "unrecognized arguments: --bogus",
        ),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, tokenized, args, evaluate, expected):  # noqa: F811
    work = _workspace(tmp_path, tokenized)
    _save_random_model(work, "dense", "models/finetune/s1234/dense-fact_verification-direct")
    write_params(
        work, prepare={"embedded": TINY_EMBEDDED}, tokenize=MICRO_TOKENIZE, model=MICRO_MODEL,
        instruct={"val_examples": 16}, evaluate={**MICRO_EVAL, **evaluate},
    )  # fmt: skip
    proc = run_stage("evaluate", work, check=False, args=args)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["data", "models", "params.yaml"]


def test_model_without_tokenizer_is_refused(tmp_path, tokenized):  # noqa: F811
    work = _workspace(tmp_path, tokenized)
    _save_random_model(work, "dense", "models/pretrain/s1234/dense")
    (work / "models" / "pretrain" / "s1234" / "dense" / "tokenizer.json").unlink()
    proc = run_stage("evaluate", work, check=False, args=("models/pretrain/s1234/dense",))
    assert proc.returncode == 2 and "has no tokenizer.json" in proc.stderr
    assert not (work / "metrics").exists() and not (work / "evals").exists()
