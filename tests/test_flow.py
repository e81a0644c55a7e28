"""The Prefect flow (pipelines/flow.py) runs dvc.yaml's stages through DVC: the graph comes from DVC,
one task run per stage in dependency order, DVC decides what is skipped, overrides are validated before
anything runs, one MLflow parent run around it all, a markdown artifact at the end.

The flow runs use a copy of the repo at micro sizes (test_pipeline's `workspace`); the graph and
override tests need no run.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flanmoe import tracking
from flanmoe.config import ParamsError
from pipelines import flow as pf
from pipelines.graph import select_stages, stage_graph
from pipelines.overrides import apply_overrides, hydra_overrides, validate_overrides
from pipelines.publish import ARTIFACT_KEY, REPORT_KEY
from tests.stage_helpers import REPO
from tests.test_pipeline import workspace  # noqa: F401 - the micro-size copy of the repo (fixture)

slow = pytest.mark.slow


# -- the graph, from the real dvc.yaml (no run) ------------------------------------------------------


def test_stage_graph_is_a_topological_order_of_dvc_yaml():
    graph = stage_graph(REPO)
    order = list(graph)
    pos = {s: i for i, s in enumerate(order)}
    archs = yaml.safe_load((REPO / "params.yaml").read_text())["archs"]["run"]
    assert order[:2] == ["prepare", "tokenize"]
    for stage, upstream in graph.items():
        assert all(pos[u] < pos[stage] for u in upstream), (stage, upstream)
    for arch in archs:  # stage names end with the seed of base.seeds (matrix)
        assert graph[f"pretrain@{arch}-1234"] == ["tokenize"]
        assert f"pretrain@{arch}-1234" in graph[f"instruct@{arch}-1234"]
        assert pos[f"instruct@{arch}-1234"] > pos[f"pretrain@{arch}-1234"]
        assert f"instruct@{arch}-1234" in graph[f"evaluate@{arch}-instruct-1234"]
        assert pos[f"evaluate@{arch}-instruct-1234"] > pos[f"instruct@{arch}-1234"]
    assert "finetune@switch-list_sum-direct-1234" in graph and "evaluate@dense-instruct-1234" in graph
    assert {"pretrain@switch-1234", "instruct@switch-1234"} <= set(
        graph["finetune@switch-list_sum-direct-1234"]
    )
    assert graph["evaluate_finetune@switch-list_sum-direct-1234"] == [
        "tokenize",
        "finetune@switch-list_sum-direct-1234",
    ]

    # targets: a stage (or a foreach/matrix name) with everything upstream of it, in the same order
    assert list(select_stages(graph, ["pretrain@dense-1234"])) == [
        "prepare",
        "tokenize",
        "pretrain@dense-1234",
    ]
    picked = select_stages(graph, ["instruct"])
    assert set(picked) == {"prepare", "tokenize"} | {
        f"{s}@{a}-1234" for s in ("pretrain", "instruct") for a in archs
    }
    with pytest.raises(ValueError, match="pretrain@nope-1234"):
        select_stages(graph, ["pretrain@nope-1234"])


# -- overrides: what the flow validates is what `dvc exp run -S` writes ------------------------------


def test_overrides_render_to_what_dvc_applies(tmp_path):
    from dvc.utils.hydra import apply_overrides as dvc_apply

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    overrides = {
        "pretrain.steps": 50,
        "archs.run": ["dense", "switch"],
        "pretrain.lr": 0.25,  # (a float without a dot, 1e-05, comes back from DVC's YAML as a string)
        "evaluate.max_examples": None,
        "model.moe.dropless": True,
        "tokenize.tokenizer_path": "data/raw/tok.json",
        "base.experiment": "it's a \\ test, ok",
        "evaluate.suites": ["True", "null", "1234", "a b", "nan"],  # strings that look like other types
        "prepare.pretrain": {"kind": "hub", "path": "allenai/c4", "name": "en"},  # a mapping merges
        "archs.variants.gshard2": {"moe": {"router": "gshard", "num_experts": 4}},  # a new key: +key=
    }
    args = hydra_overrides(data, overrides)
    assert "pretrain.steps=50" in args and "archs.run=[dense,switch]" in args
    assert "+archs.variants.gshard2={moe:{router:gshard,num_experts:4}}" in args
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    dvc_apply(path, args)
    assert yaml.safe_load(path.read_text()) == apply_overrides(data, overrides)

    params = validate_overrides(data, {k: v for k, v in overrides.items() if k != "evaluate.suites"})
    assert params.pretrain.steps == 50 and params.prepare.pretrain.kind == "hub"
    for bad, key in [
        ({"pretrain.parallel.ep": 3}, "pretrain.parallel.ep"),
        ({"pretrain.stpes": 5}, "pretrain.stpes"),
        ({"archs.run": ["dense", "nope"]}, "archs.run"),
        ({"pretrain.steps.x": 1}, "pretrain.steps.x"),
    ]:
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            validate_overrides(data, bad)


# -- a stage's outcome, from DVC's state (a one-file DVC repo, no Prefect) -------------------------------


def _dvc_repo(path: Path, stages: dict, params: dict) -> Path:
    path.mkdir()
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    (path / "in.txt").write_text("input\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], [*git, "add", "-A"],
                [*git, "commit", "-qm", "x"]):  # fmt: skip
        subprocess.run(cmd, cwd=path, check=True, capture_output=True)
    return path


def _python(code: str) -> str:
    return f"{sys.executable} -c {json.dumps(code)}"


def test_stage_outcome_comes_from_dvc_state_not_its_output(tmp_path):
    """ran / skipped / restored / failed / params missing, decided from DVC's status, the command's
    exit status and DVC's: the counter file says whether the command really ran."""
    import logging

    from pipelines import runner

    count = "open('runs.txt', 'a').write('x'); "
    write_n = "import yaml; open('out.txt', 'w').write(str(yaml.safe_load(open('params.yaml'))['a']['n']))"
    repo = _dvc_repo(
        tmp_path / "r",
        {
            "make": {
                "cmd": _python(count + write_n),
                "deps": ["in.txt"],
                "params": ["a.n"],
                "outs": ["out.txt"],
            },
            "crash": {"cmd": _python(count + "raise SystemExit(3)"), "deps": ["in.txt"], "outs": ["c.txt"]},
            "bad": {"cmd": _python(count + "raise SystemExit(2)"), "deps": ["in.txt"], "outs": ["b.txt"]},
            "nokey": {"cmd": _python(count + "open('k.txt', 'w')"), "params": ["a.nope"], "outs": ["k.txt"]},
        },
        {"a": {"n": 1}},
    )
    logger = logging.getLogger("test_flow.outcome")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(stage: str) -> str:
        return runner.run_dvc_stage(stage, repo, env, logger)

    def runs() -> int:
        return len((repo / "runs.txt").read_text()) if (repo / "runs.txt").exists() else 0

    assert runner.stage_status(repo, "make") == runner.StageStatus(changed=True)
    assert (run("make"), runs(), (repo / "out.txt").read_text()) == ("ran", 1, "1")
    assert runner.stage_status(repo, "make") == runner.StageStatus(changed=False)
    assert (run("make"), runs()) == ("skipped", 1)
    (repo / "out.txt").unlink()  # changed, and DVC's run cache has its outputs
    assert (run("make"), runs(), (repo / "out.txt").read_text()) == ("restored", 1, "1")
    (repo / "params.yaml").write_text(yaml.safe_dump({"a": {"n": 2}}))
    assert (run("make"), runs(), (repo / "out.txt").read_text()) == ("ran", 2, "2")
    (repo / "params.yaml").write_text(yaml.safe_dump({"a": {"n": 1}}))  # back: from the run cache
    assert (run("make"), runs(), (repo / "out.txt").read_text()) == ("restored", 2, "1")

    with pytest.raises(runner.StageFailed) as err:
        run("crash")
    assert type(err.value) is runner.StageFailed and err.value.stage_returncode == 3
    assert err.value.returncode not in (0, None) and runs() == 3
    with pytest.raises(runner.StageParamsError) as err:  # exit status 2: bad params, never retried
        run("bad")
    assert err.value.stage_returncode == 2 and runs() == 4
    with pytest.raises(runner.StageParamsError, match=r"params\.yaml: a\.nope") as err:
        run("nokey")  # a params key dvc.yaml lists and params.yaml lacks: DVC is not even started
    assert err.value.returncode is None and runs() == 4 and not (repo / "k.txt").exists()
    assert runner.stage_status(repo, "nokey").missing_params == ["params.yaml: a.nope"]

    # the decision itself: DVC's exit status, then whether the command ran, then the status before
    assert runner.outcome(changed=True, dvc_returncode=0, command_returncode=0) == "ran"
    assert runner.outcome(changed=False, dvc_returncode=0, command_returncode=0) == "ran"  # always_changed
    assert runner.outcome(changed=True, dvc_returncode=0, command_returncode=None) == "restored"
    assert runner.outcome(changed=False, dvc_returncode=0, command_returncode=None) == "skipped"
    assert runner.outcome(changed=True, dvc_returncode=255, command_returncode=0) == "failed"
    assert runner.outcome(changed=True, dvc_returncode=255, command_returncode=None) == "failed"


# -- flow runs (Prefect test server, a micro copy of the repo) ---------------------------------------


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):  # ephemeral server, slow on a busy machine
        yield


@pytest.fixture
def micro(workspace, monkeypatch):  # noqa: F811
    work, env = workspace
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    return work


def _prefect_record(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return flow_run, {t.name: t for t in tasks}, artifacts


# The whole micro pipeline costs ~5 minutes here (20 stages; evaluate alone ~3 min): the run covers
# the stages up to pretrain@dense-1234 (prepare, tokenize, pretrain@dense).
TARGETS = ["pretrain@dense-1234"]
SUBSET = ["prepare", "tokenize", "pretrain@dense-1234"]


@slow
def test_flow_runs_each_stage_through_dvc_then_skips(prefect_server, micro):
    work = micro
    t0 = time.monotonic()
    state = pf.pipeline(repo=str(work), targets=TARGETS, retry_delay_seconds=1, return_state=True)
    first_s = time.monotonic() - t0
    assert state.is_completed(), state.message
    states = state.result()
    assert states == dict.fromkeys(SUBSET, "ran")
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(SUBSET)
    assert (work / "models" / "pretrain" / "s1234" / "dense" / "model.safetensors").is_file()

    flow_run_id = state.state_details.flow_run_id
    flow_run, tasks, artifacts = _prefect_record(flow_run_id)
    assert set(tasks) == set(SUBSET)  # one task run per stage, named after it
    assert all(t.state.is_completed() and t.run_count == 1 for t in tasks.values())
    # in dependency order, each with its upstream task as an input
    assert (
        tasks["prepare"].end_time <= tasks["tokenize"].start_time <= tasks["pretrain@dense-1234"].start_time
    )
    waited = {str(i.id) for i in tasks["pretrain@dense-1234"].task_inputs.get("wait_for", [])}
    assert waited == {str(tasks["tokenize"].id)}
    (artifact,) = [a for a in artifacts if a.key == ARTIFACT_KEY]
    assert "| pretrain@dense-1234 | ran |" in artifact.data and "| prepare | ran |" in artifact.data

    # MLflow: one parent run for the flow, tagged with the flow run; every stage's run is its child
    runs = tracking.search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}")
    (parent,) = [r for r in runs if r["tags"].get("pipeline") == "prefect flow"]
    assert parent["status"] == "FINISHED" and parent["tags"]["prefect_flow_run_id"] == str(flow_run_id)
    assert f"mlflow_run_id:{parent['run_id']}" in flow_run.tags
    children = {r["tags"]["stage"] for r in runs if r["tags"].get("mlflow.parentRunId") == parent["run_id"]}
    assert children == {"prepare", "tokenize", "pretrain"}

    # second run: DVC finds every stage up to date
    t0 = time.monotonic()
    again = pf.pipeline(repo=str(work), targets=TARGETS)
    second_s = time.monotonic() - t0
    assert again == dict.fromkeys(SUBSET, "skipped")

    # (experiments, which run in a private copy of the workspace: tests/test_ui.py, through the server)
    print(f"flow: first run {first_s:.1f} s, all-skipped run {second_s:.1f} s")


@slow
def test_bad_override_fails_the_flow_before_any_stage(prefect_server, micro):
    work = micro
    before = (work / "params.yaml").read_bytes()
    state = pf.pipeline(repo=str(work), overrides={"pretrain.parallel.ep": 3}, return_state=True)
    assert state.is_failed()
    with pytest.raises(ParamsError, match=r"pretrain\.parallel\.ep"):
        state.result()
    assert (work / "params.yaml").read_bytes() == before
    assert not (work / "dvc.lock").exists() and not (work / "data" / "prepared").exists()
    _, tasks, _ = _prefect_record(state.state_details.flow_run_id)
    assert tasks == {}  # no stage, no experiment task
    assert tracking.search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}") == []

    # the UI form goes through the same check: freezing the gate of a dense arch is refused
    from pipelines.settings import RunSettings

    form = RunSettings(archs=["dense", "switch"], freeze="gate", experiment_name="frozen")
    state = pf.pipeline(repo=str(work), settings=form, return_state=True)
    with pytest.raises(ParamsError, match=r"finetune\.freeze"):
        state.result()
    assert (work / "params.yaml").read_bytes() == before and not (work / "dvc.lock").exists()


@slow
def test_failed_stage_is_retried_unless_a_params_error_and_a_rerun_continues_from_it(prefect_server, micro):
    work = micro
    script = work / "stages" / "tokenize.py"
    original = script.read_text()
    for first, (code, attempts) in zip((True, False), [(3, 2), (2, 1)], strict=True):
        # tokenize fails mid-DAG (a params error, exit status 2, is not retried)
        script.write_text(f"import sys\nprint('boom {code}', file=sys.stderr)\nsys.exit({code})\n")
        state = pf.pipeline(repo=str(work), targets=TARGETS, retry_delay_seconds=0, return_state=True)
        assert state.is_failed()
        with pytest.raises(pf.PipelineFailed) as err:
            state.result()
        assert err.value.states == {
            "prepare": "ran" if first else "skipped",  # done once, kept
            "tokenize": "failed",
            "pretrain@dense-1234": "not run",
        }
        assert f"boom {code}" in str(err.value) and f"exited with {code}" in str(err.value)
        _, tasks, artifacts = _prefect_record(state.state_details.flow_run_id)
        assert set(tasks) == {"prepare", "tokenize"} and tasks["tokenize"].state.is_failed()
        assert tasks["tokenize"].run_count == attempts
        (artifact,) = [a for a in artifacts if a.key == ARTIFACT_KEY]
        assert "| pretrain@dense-1234 | not run |" in artifact.data
    assert not (work / "data" / "tokenized").exists()
    runs = tracking.search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}")
    assert [r["status"] for r in runs if r["tags"].get("pipeline") == "prefect flow"] == ["FAILED"] * 2

    # the stage mended: the rerun continues from it (prepare's outputs are kept, it does not run again)
    script.write_text(original)
    assert pf.pipeline(repo=str(work), targets=["tokenize"]) == {"prepare": "skipped", "tokenize": "ran"}
    assert (work / "data" / "tokenized" / "tokenizer.json").is_file()


def test_summary_scores_are_rendered_by_flanmoe_report(tmp_path):
    from flanmoe.report.scores import score_records, scores_markdown
    from pipelines.publish import evaluate_metrics, summary_markdown

    (tmp_path / "metrics" / "evaluate" / "s1234").mkdir(parents=True)
    avg = {"score": -2.5, "score_lo": -4.25, "score_hi": -0.75}
    mmlu = {"score": 0.25, "score_lo": 0.2, "score_hi": 0.3, "best_constant": 0.3, "normalized": 1.0}
    (tmp_path / "metrics" / "evaluate" / "s1234" / "dense-instruct.json").write_text(
        json.dumps({"normalized_average": {"zero_shot": avg}, "mmlu": {"few_shot": mmlu}})
    )
    (tmp_path / "metrics" / "evaluate" / "s1234" / "switch-instruct.json").write_text(
        json.dumps({"bbh": {"zero_shot": {"score": 0.15, "score_lo": 0.12, "score_hi": 0.18}}})
    )
    (tmp_path / "metrics" / "evaluate" / "s1234" / "broken.json").write_text("{")  # left out
    models = evaluate_metrics(tmp_path)
    assert [name for name, _ in models] == ["s1234/dense-instruct", "s1234/switch-instruct"]

    # markdown: the report's formats (normalized points with 1 decimal, scores with 3), columns in order
    table = scores_markdown(models).splitlines()
    assert table[0] == "| model | normalized_average zero-shot | mmlu few-shot | bbh zero-shot |"
    assert table[2] == "| s1234/dense-instruct | -2.5 [-4.2, -0.8] | 0.250 [0.200, 0.300] (const 0.300) | — |"
    assert table[3] == "| s1234/switch-instruct | — | — | 0.150 [0.120, 0.180] |"
    assert scores_markdown([]) == "" and scores_markdown([("m", {"mmlu": {"few_shot": {}}})]) == ""

    # records (the Prefect table artifact, the MLflow table): the same numbers, None where missing
    rows = score_records(models)
    assert rows[1] == {
        "model": "s1234/switch-instruct",
        "normalized_average zero-shot": None,
        "normalized_average zero-shot low": None,
        "normalized_average zero-shot high": None,
        "mmlu few-shot": None,
        "mmlu few-shot low": None,
        "mmlu few-shot high": None,
        "bbh zero-shot": 0.15,
        "bbh zero-shot low": 0.12,
        "bbh zero-shot high": 0.18,
    }
    assert rows[0]["mmlu few-shot"] == 0.25 and rows[0]["normalized_average zero-shot low"] == -4.25
    assert score_records(evaluate_metrics(tmp_path / "none")) == []

    summary = summary_markdown(
        {"prepare": "skipped", "evaluate": "ran", "report": "not run"},
        "t",
        {"MLflow": "http://x/1", "a": ""},
        models,
    )
    assert "- MLflow: <http://x/1>" in summary and "- a:" not in summary
    assert "- states: 1 ran, 1 skipped, 1 not run" in summary and "| report | not run |" in summary
    assert "\n".join(table) in summary


# -- the UI form (pipelines/settings.py) --------------------------------------------------------------


def test_form_renders_dropdowns_and_every_field_is_a_params_key():
    from prefect.utilities.callables import parameter_schema

    from pipelines.settings import KEYS, RunSettings

    schema = parameter_schema(pf.pipeline.fn).model_dump()
    assert "settings" in schema["properties"]
    props = schema["definitions"]["RunSettings"]["properties"]
    archs = props["archs"]["anyOf"][0]["items"]["enum"]
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(archs) == set(shipped["archs"]["variants"])  # a dropdown of the defined archs
    assert props["freeze"]["anyOf"][0]["enum"] == ["none", "gate", "experts", "non_moe"]
    assert all(props[f].get("description") for f in KEYS)
    # every field maps onto a key of the params schema (one params.yaml leaves out gets `+key=`)
    from flanmoe.config import parse_params

    defaults = parse_params(shipped).model_dump()
    for key in [k for keys in KEYS.values() for k in ((keys,) if isinstance(keys, str) else keys)]:
        node = defaults
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    assert RunSettings().overrides() == {}
    form = RunSettings(archs=["dense", "gshard"], pretrain_steps=5, freeze="none", experiment_name="x")
    assert form.overrides() == {
        "archs.run": ["dense", "gshard"],
        "pretrain.steps": 5,
        "finetune.freeze": "none",
    }
    form = RunSettings(extra_seeds=[7, 8], extra_archs=["dense", "switch"])
    assert form.overrides() == {"base.extra_seeds": [7, 8], "base.extra_archs": ["dense", "switch"]}


@pytest.mark.parametrize(
    ("form", "key"),
    [
        ({"archs": ["dense", "switch"], "freeze": "gate"}, "finetune.freeze"),  # dense accepts only none
        ({"num_experts": 6, "moe_every": 2}, None),  # valid
        ({"preset": "tiny", "num_experts": 1, "archs": ["gshard"]}, "num_experts"),  # top-2 needs 2 experts
        ({"num_experts": 6, "nproc": 4, "expert_parallel": 4}, "parallel.ep"),  # 4 does not divide 6 experts
        ({"nproc": 4, "expert_parallel": 2}, None),
        ({"seeds": [1, 2], "extra_seeds": [3, 4]}, None),  # dense and switch 4 seeds
        ({"seeds": [1, 2], "extra_seeds": [2, 3]}, "base.extra_seeds"),  # 2 twice
        ({"archs": ["dense", "gshard"], "extra_seeds": [3]}, "base.extra_archs"),  # switch does not run
    ],
)
def test_form_combinations_are_validated_like_params_yaml(form, key):
    from pipelines.settings import RunSettings

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    overrides = RunSettings(**form).overrides()
    if key is None:
        validate_overrides(data, overrides)
    else:
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            validate_overrides(data, overrides)


@slow
def test_report_stage_output_is_published_as_artifact_and_logged(prefect_server, tmp_path, monkeypatch):
    """When a run reaches the report stage, its report.md becomes a Prefect markdown artifact and the
    report folder an artifact of the MLflow parent run (a one-stage DVC repo stands in for the DAG)."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    (work / "dvc.yaml").write_text(
        "stages:\n  report:\n"
        "    cmd: mkdir -p docs/report && printf '# the study\\n\\n| a | b |\\n' > docs/report/report.md\n"
        "    outs:\n      - docs/report:\n          cache: false\n"
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], [*git, "add", "-A"],
                [*git, "commit", "-qm", "x"]):  # fmt: skip
        subprocess.run(cmd, cwd=work, check=True, capture_output=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlruns.db'}")
    state = pf.pipeline(repo=str(work), return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {"report": "ran"}
    _, _, artifacts = _prefect_record(state.state_details.flow_run_id)
    (study,) = [a for a in artifacts if a.key == REPORT_KEY]
    assert study.data.startswith("# the study")
    (parent,) = [r for r in tracking.search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}")]
    from mlflow.tracking import MlflowClient

    files = [
        f.path
        for f in MlflowClient(f"sqlite:///{work / 'mlruns.db'}").list_artifacts(parent["run_id"], "report")
    ]
    assert files == ["report/report.md"]
