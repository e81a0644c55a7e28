"""The pipeline as a Prefect 3 flow that runs every stage *through DVC*.

dvc.yaml stays the one DAG and DVC (its cache and dvc.lock) decides what is up to date: the flow reads
the stage graph from DVC, and runs each stage as its own Prefect task run (named after the stage, e.g.
``pretrain@switch-1234``) through ``dvc repro --single-item <stage>``, one at a time in dependency order (a
workspace allows one DVC process). A stage ends ``ran``, ``skipped`` (DVC: up to date), ``restored``
(DVC checked its outputs out of the run cache) or ``failed``; the stages downstream of a failure end
``not run`` and the flow fails. Prefect caching is off: DVC alone skips unchanged stages.

With parameter overrides (dotted keys), the flow validates them against the project's params schema
before anything runs (params.yaml untouched on error), then runs the pipeline as a DVC experiment: in a
private copy of the workspace (a git clone sharing DVC's cache, the overrides applied as `dvc exp run
-S` would), stage by stage as above, recorded at the end with `dvc exp save` (``dvc exp show`` lists
it). The workspace is not touched, so experiments run one after another or at once cannot mix.

The whole flow is one MLflow parent run (every stage's run is a child through
``FLANMOE_PARENT_RUN_ID``), tagged with the Prefect flow run id; the flow run gets the tag
``mlflow_run_id:<id>``. At the end a markdown artifact lists the stages, their states and the
evaluation scores of ``metrics/evaluate/s<seed>/*.json``.

    python -m pipelines.flow                                   # the workspace, `dvc repro` semantics
    python -m pipelines.flow --set pretrain.steps=50 --set 'archs.run=[dense,switch]' --name steps50
    python -m pipelines.flow --target tokenize --target pretrain@dense-1234
"""

import argparse
import contextlib
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

import flanmoe  # noqa: F401 - applies the offline environment before prefect reads its settings

# Prefect reads its settings when it is imported: an ephemeral server on a loaded machine needs longer
# than the default 20 s to start.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flanmoe.config import ParamsError, parse_params  # noqa: E402
from pipelines.settings import RunSettings  # noqa: E402
from stages.common import git_commit  # noqa: E402

RAN, SKIPPED, RESTORED, FAILED, NOT_RUN = "ran", "skipped", "restored", "failed", "not run"
PARAMS_FILE = "params.yaml"
PRESETS_DIR = "presets"  # presets/<name>.yaml: dotted params keys over params.yaml (default, study, gpu)
STDERR_TAIL = 20  # lines of a failed stage's stderr in the log and the exception
ARTIFACT_KEY = "flan-moe-pipeline"
TABLE_KEY = "flan-moe-scores"
REPORT_KEY = "flan-moe-report"  # <report.dir>/report.md, when the run reached the report stage


# --------------------------------------------------------------------------------------------------
# The stage graph, from DVC


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    """Work in ``path`` (DVC names stages relative to the working directory, MLflow's default store is
    ./mlruns.db)."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def stage_graph(repo: str | Path = ".") -> dict[str, list[str]]:
    """The pipeline stages of ``repo`` (expanded names such as ``pretrain@switch``) in a topological
    order (dvc.yaml order where the DAG allows), each with its direct upstream stages.

    Read from DVC's own index, so it is exactly the DAG `dvc repro` runs.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with _cwd(Path(repo).resolve()), Repo(".") as dvc_repo:  # names relative to the repo root
        index = dvc_repo.index
        graph = index.graph  # an edge goes from a stage to a stage it depends on
        position = {stage: i for i, stage in enumerate(index.stages)}
        order = nx.lexicographical_topological_sort(
            graph.reverse(copy=True), key=lambda s: (position.get(s, len(position)), s.addressing)
        )
        result: dict[str, list[str]] = {}
        for stage in order:
            if not isinstance(stage, PipelineStage):
                continue  # `dvc add`/import .dvc files: data sources, not run by `repro --single-item`
            upstream: list[str] = []
            todo = list(graph.successors(stage))
            seen = set()
            while todo:  # nearest pipeline stages, through any .dvc data sources in between
                node = todo.pop()
                if node in seen:
                    continue
                seen.add(node)
                if isinstance(node, PipelineStage):
                    upstream.append(node.addressing)
                else:
                    todo.extend(graph.successors(node))
            result[stage.addressing] = sorted(upstream, key=list(result).index)
        return result


def select_stages(graph: Mapping[str, list[str]], targets: list[str] | None) -> dict[str, list[str]]:
    """The stages `dvc repro TARGET...` would consider: each target (a stage name, or a foreach/matrix
    name such as ``pretrain`` for every ``pretrain@...``) with all its upstream stages, in ``graph``'s
    order. ``ValueError`` names a target that matches no stage."""
    if not targets:
        return dict(graph)
    wanted: set[str] = set()
    for target in targets:
        matched = [s for s in graph if s == target or s.split("@", 1)[0] == target]
        if not matched:
            raise ValueError(f"targets: no stage {target!r} in dvc.yaml; stages: {', '.join(graph)}")
        todo = list(matched)
        while todo:
            stage = todo.pop()
            if stage not in wanted:
                wanted.add(stage)
                todo.extend(graph[stage])
    return {s: ups for s, ups in graph.items() if s in wanted}


# --------------------------------------------------------------------------------------------------
# Overrides: validated like params.yaml, rendered as Hydra overrides for `dvc exp run -S`


def _merge(base: object, value: object) -> object:
    """OmegaConf's merge, as Hydra applies an override: mappings merge key by key, the rest replaces."""
    if isinstance(base, dict) and isinstance(value, dict):
        out = dict(base)
        for k, v in value.items():
            out[k] = _merge(out[k], v) if k in out else v
        return out
    return value


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (parsed params.yaml) with dotted-key ``overrides`` applied, as ``dvc exp run -S`` would
    (a new copy; missing sections are created). ``ParamsError`` names a key that cannot be set."""
    out = json.loads(json.dumps(dict(data)))  # deep copy of plain YAML data
    for key, value in overrides.items():
        parts = key.split(".")
        if not key or any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", p) for p in parts):
            raise ParamsError("overrides", [f"{key}: not a dotted key of params.yaml"])
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ParamsError("overrides", [f"{key}: {where} is not a mapping (it is {child!r})"])
            node = child
        last = parts[-1]
        node[last] = _merge(node[last], value) if last in node else value
    return out


def validate_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], source: str = PARAMS_FILE):
    """The validated ``Params`` of ``data`` with ``overrides``; ``ParamsError`` names every bad key."""
    return parse_params(apply_overrides(data, overrides), f"{source} with overrides")


def _has_key(data: Mapping[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./@]*")  # unquoted, Hydra reads these as strings...
_RESERVED = {"true", "false", "null", "nan", "inf"}  # ...except these (any case)


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (other strings quoted: ``'1234'`` stays a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if "${" in value:
            raise ValueError(f"{value!r}: interpolations are not supported in overrides")
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value  # parses back as this string: dense, data/raw/x.json
        # Hydra unescapes only the backslashes before a quote or the closing quote
        return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value) + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(k)):
                raise ValueError(f"{k!r}: not a plain mapping key")
            items.append(f"{k}:{hydra_value(v)}")
        return "{" + ",".join(items) + "}"
    raise ValueError(f"{value!r}: a {type(value).__name__} is not a params value")


def hydra_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """``-S`` arguments for ``dvc exp run``: ``key=value``, or ``+key=value`` for a key params.yaml
    lacks or a mapping value (Hydra refuses to add a key without ``+``, and merges a mapping into the
    existing one, which adds keys)."""
    return [
        f"{'' if _has_key(data, key) and not isinstance(value, dict) else '+'}{key}={hydra_value(value)}"
        for key, value in overrides.items()
    ]


# --------------------------------------------------------------------------------------------------
# Running DVC


class StageFailed(RuntimeError):
    """A DVC command failed; ``stage_returncode`` is the stage command's exit status when DVC says it."""

    def __init__(self, stage: str, returncode: int, stage_returncode: int | None, tail: list[str]):
        self.stage = stage
        self.returncode = returncode
        self.stage_returncode = stage_returncode
        self.tail = tail
        self.states: dict[str, str] = {}
        status = f"dvc exit status {returncode}"
        if stage_returncode is not None:
            status += f", stage command exit status {stage_returncode}"
        super().__init__(f"{stage} failed ({status}); last lines of stderr:\n" + "\n".join(tail))


class StageParamsError(StageFailed):
    """A stage stopped on invalid params (exit status 2), or DVC found a params dependency missing:
    retrying cannot help."""


_EXITED = re.compile(r"exited with (-?\d+)")
_MISSING_PARAMS = re.compile(r"Parameters .* (is|are) missing from")
_STATE_LINES = [
    (re.compile(r"Running stage '([^']+)'"), RAN),
    (re.compile(r"Stage '([^']+)' didn't change, skipping"), SKIPPED),
    (re.compile(r"Stage '([^']+)' is cached - skipping run"), RESTORED),
    (re.compile(r"failed to reproduce '([^']+)'"), FAILED),
]
_SKIPPED_DOWNSTREAM = re.compile(r"Stages? (.+) will be skipped due to this failure")


def parse_states(lines: list[str]) -> dict[str, str]:
    """Per-stage states from the output of `dvc repro` / `dvc exp run`, in the order DVC reached them."""
    states: dict[str, str] = {}
    for line in lines:
        for pattern, state in _STATE_LINES:
            for match in pattern.finditer(line):
                states[match.group(1)] = state
        m = _SKIPPED_DOWNSTREAM.search(line)
        if m:
            for name in re.findall(r"'([^']+)'", m.group(1)):
                states[name] = NOT_RUN
    return states


def stage_env(parent_run_id: str | None = None, experiment: str | None = None) -> dict[str, str]:
    """The environment of DVC and its stages: `python` is this interpreter's, output unbuffered (lines
    reach the log as they are printed), MLflow runs children of the flow's parent run in the store the
    flow uses (an absolute URI: experiments run in another directory), ``DVC_EXP_NAME`` the experiment's
    name (as `dvc exp run` sets it)."""
    from flanmoe import tracking

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": tracking.tracking_uri(),
    }
    if parent_run_id:
        env[tracking.PARENT_ENV] = parent_run_id
    if experiment:
        env["DVC_EXP_NAME"] = experiment
    return env


def stream(
    cmd: list[str], cwd: str | Path, env: Mapping[str, str], logger
) -> tuple[int, list[str], list[str]]:
    """Run ``cmd``, logging each output line as it comes; returns (exit status, all lines, stderr tail)."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    )
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(pipe, name: str) -> None:
        for line in pipe:
            lines.put((name, line.rstrip("\r\n")))
        lines.put((name, None))

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True),
    ]
    for t in threads:
        t.start()
    seen: list[str] = []
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    open_pipes = 2
    try:
        while open_pipes:
            name, line = lines.get()
            if line is None:
                open_pipes -= 1
                continue
            seen.append(line)
            if name == "stderr":
                tail.append(line)
            if line.strip():
                logger.info(line)
    except BaseException:  # interrupted, cancelled: DVC must not run on unseen
        proc.terminate()
        proc.wait()
        raise
    for t in threads:
        t.join()
    return proc.wait(), seen, list(tail)


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def _failure(stage: str, rc: int, lines: list[str], tail: list[str]) -> StageFailed:
    codes = [int(m.group(1)) for line in lines for m in _EXITED.finditer(line)]
    stage_rc = codes[-1] if codes else None
    missing = any(_MISSING_PARAMS.search(line) for line in lines)  # DVC: a params dep absent
    cls = StageParamsError if stage_rc == 2 or missing else StageFailed
    return cls(stage, rc, stage_rc, tail)


def _retry_unless_params_error(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        with contextlib.suppress(Exception):
            exc = state.result(raise_on_failure=False)
    return not isinstance(exc, StageParamsError)


@task(
    task_run_name="{stage}",
    cache_policy=NO_CACHE,  # DVC decides what is up to date
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_unless_params_error,
)
def run_stage(stage: str, repo: str, parent_run_id: str | None = None, experiment: str | None = None) -> str:
    """``dvc repro --single-item STAGE``: returns ``ran``, ``skipped`` or ``restored``; raises
    ``StageFailed`` (``StageParamsError`` for exit status 2, never retried)."""
    logger = get_run_logger()
    env = stage_env(parent_run_id, experiment)
    rc, lines, tail = stream(_dvc("repro", "--single-item", stage), repo, env, logger)
    if rc != 0:
        exc = _failure(stage, rc, lines, tail)
        logger.error("%s", exc)
        raise exc
    state = parse_states(lines).get(stage, SKIPPED)  # no "Running stage" line: DVC ran nothing
    logger.info("stage %s: %s", stage, state)
    return state


# --------------------------------------------------------------------------------------------------
# Experiments: each in its own clone of the workspace, recorded as a DVC experiment

EXPERIMENTS_DIR = Path(".dvc") / "tmp" / "flow-runs"  # inside .dvc: DVC and git ignore it


def _git(cwd: str | Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def experiment_ref(repo: str | Path, name: str) -> str | None:
    """The git ref of DVC experiment ``name`` in ``repo`` (``refs/exps/../NAME``), or None."""
    refs = _git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)


def check_experiment_name(repo: str | Path, name: str) -> None:
    """``ValueError`` when ``name`` cannot be a new DVC experiment of ``repo``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.endswith((".", ".lock")):
        raise ValueError(f"experiment name {name!r}: use letters, digits, '_', '-' and '.'")
    try:
        _git(repo, "rev-parse", "--verify", "-q", "HEAD")
    except subprocess.CalledProcessError:
        raise ValueError(f"{repo}: DVC experiments need a git repository with a commit") from None
    if experiment_ref(repo, name):
        raise ValueError(
            f"experiment name {name!r}: a DVC experiment of that name exists (`dvc exp remove {name}`, "
            "or choose another name)"
        )


def _dvc_cache_dir(repo: Path) -> str:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return dvc_repo.cache.local_cache_dir


@contextlib.contextmanager
def experiment_workspace(root: Path, name: str, set_params: list[str]) -> Iterator[Path]:
    """A private copy of the workspace for experiment ``name``, removed at the end.

    What `dvc exp run --temp` does, so that every stage can still be its own task run: a git clone of
    HEAD (objects shared) with the workspace's uncommitted changes copied over, DVC's cache shared with
    the workspace (so finished stages are found in the run cache, and outputs are not copied twice), and
    the Hydra overrides applied to its params.yaml. The workspace itself is never touched, so runs of
    different experiments cannot mix, and a workspace stays what its user left.
    """
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    dest = root / EXPERIMENTS_DIR / name
    shutil.rmtree(dest, ignore_errors=True)  # left behind by a killed run of the same name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        head = _git(root, "rev-parse", "HEAD").strip()
        _git(root, "clone", "-q", "--shared", "--no-checkout", str(root), str(dest))
        _git(dest, "checkout", "-q", "--detach", head)
        changed = _git(root, "ls-files", "-z", "--modified", "--others", "--exclude-standard").split("\0")
        for rel in filter(None, changed):
            src = root / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
            else:  # deleted in the workspace
                (dest / rel).unlink(missing_ok=True)
        local = root / ".dvc" / "config.local"  # the user's local remotes and credentials
        if local.is_file():
            shutil.copy2(local, dest / ".dvc" / "config.local")
        subprocess.run(
            _dvc("config", "--local", "cache.dir", _dvc_cache_dir(root)),
            cwd=dest, check=True, capture_output=True, text=True,
        )  # fmt: skip
        if set_params:
            dvc_apply_overrides(str(dest / PARAMS_FILE), set_params)
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def presets(repo: str | Path = ".") -> list[str]:
    """The preset names of ``repo`` (``presets/<name>.yaml``)."""
    return sorted(p.stem for p in (Path(repo) / PRESETS_DIR).glob("*.yaml"))


def load_preset(repo: str | Path, name: str) -> dict[str, Any]:
    """The overrides of preset ``name`` (``presets/<name>.yaml``: dotted params keys -> values).
    ``ValueError`` naming the file for an unknown preset or one that is not such a mapping."""
    path = Path(repo) / PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"preset: no {PRESETS_DIR}/{name}.yaml (presets: {', '.join(presets(repo)) or 'none'})"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{PRESETS_DIR}/{name}.yaml: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"{PRESETS_DIR}/{name}.yaml: must map dotted params keys to values")
    return data


def export_report(work: Path, root: Path, report_dir: str, logger=None) -> Path | None:
    """Copy an experiment's report folder (``report.dir``, e.g. docs/study) into the workspace, unless
    it is the workspace's own report stage output (its DVC out: left to `dvc exp apply`)."""
    own = (parse_params(yaml.safe_load((root / PARAMS_FILE).read_text()) or {}, PARAMS_FILE)).report.dir
    src, dest = work / report_dir, root / report_dir
    if report_dir == own or not (src / "report.md").is_file():
        return None
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    if logger is not None:
        logger.info("report of the experiment copied to %s", dest)
    return dest


@task(task_run_name="dvc checkout", cache_policy=NO_CACHE)
def checkout(repo: str) -> None:
    """Check the outputs dvc.lock records out of the shared cache (missing ones are left to the run)."""
    logger = get_run_logger()
    rc, _, _ = stream(_dvc("checkout", "--quiet"), repo, stage_env(), logger)
    if rc != 0:
        logger.info("dvc checkout: some outputs are not in the cache; their stages will run")


@task(task_run_name="dvc exp save {name}", cache_policy=NO_CACHE)
def save_experiment(name: str, stages: list[str], repo: str, origin: str) -> str:
    """Record the run as DVC experiment ``name`` (`dvc exp save`) and push its git ref to the workspace
    repo ``origin`` (`dvc exp push --no-cache`: the cache is already shared). Returns the ref."""
    logger = get_run_logger()
    untracked = _git(repo, "ls-files", "-z", "--others", "--exclude-standard").split("\0")
    save = _dvc("exp", "save", "-n", name, *(a for p in filter(None, untracked) for a in ("-I", p)), *stages)
    for cmd in (save, _dvc("exp", "push", "--no-cache", "origin", name)):
        rc, lines, tail = stream(cmd, repo, stage_env(), logger)
        if rc != 0:
            raise StageFailed(f"dvc exp {cmd[4]} {name}", rc, None, tail)
    ref = experiment_ref(origin, name)
    logger.info("DVC experiment %s: %s", name, ref)
    return ref or ""


# --------------------------------------------------------------------------------------------------
# The report


def _score(section: Mapping[str, Any] | None, mode: str) -> str:
    cell = (section or {}).get(mode)
    if not isinstance(cell, dict) or "score" not in cell:
        return ""
    text = f"{cell['score']:.3f}"
    if "best_constant" in cell:
        text += f" (const {cell['best_constant']:.3f})"
    return text


SCORE_COLUMNS = [
    (section, mode)
    for section in ("normalized_average", "mmlu", "bbh", "heldin", "finetune")
    for mode in ("zero_shot", "few_shot")
]


def evaluate_metrics(repo: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(model, data)`` of every readable ``metrics/evaluate/s<seed>/*.json``, named
    ``s<seed>/<model>``."""
    out = []
    root = Path(repo) / "metrics" / "evaluate"
    for f in sorted(root.glob("s*/*.json")):
        try:
            out.append((f"{f.parent.name}/{f.stem}", json.loads(f.read_text())))
        except (OSError, ValueError):
            continue
    return out


def score_rows(repo: str | Path, loaded: list[tuple[str, dict]] | None = None) -> list[dict[str, Any]]:
    """One row per ``metrics/evaluate/*.json`` (or per ``loaded`` entry of ``evaluate_metrics``): the
    model and its headline scores with their 95% CI (columns ``<suite> <zero|few>-shot``, ``... low``,
    ``... high``; only columns some model has)."""
    rows = []
    for name, data in evaluate_metrics(repo) if loaded is None else loaded:
        row: dict[str, Any] = {"model": name}
        for section, mode in SCORE_COLUMNS:
            cell = (data.get(section) or {}).get(mode)
            if isinstance(cell, dict) and "score" in cell:
                col = f"{section} {mode.replace('_', '-')}"
                for suffix, key in (("", "score"), (" low", "score_lo"), (" high", "score_hi")):
                    if isinstance(cell.get(key), int | float):
                        row[col + suffix] = round(cell[key], 4)
        rows.append(row)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return [{c: r.get(c) for c in columns} for r in rows] if len(columns) > 1 else []


def metrics_table(repo: str | Path, loaded: list[tuple[str, dict]] | None = None) -> str:
    """Markdown table of the headline scores in ``metrics/evaluate/*.json`` (or ``loaded``; '' when
    none)."""
    rows = [
        (name, [_score(data.get(s), m) for s, m in SCORE_COLUMNS])
        for name, data in (evaluate_metrics(repo) if loaded is None else loaded)
    ]
    used = [i for i, col in enumerate(SCORE_COLUMNS) if any(cells[i] for _, cells in rows)]
    if not rows or not used:
        return ""
    head = ["model"] + [f"{SCORE_COLUMNS[i][0]} {SCORE_COLUMNS[i][1].replace('_', '-')}" for i in used]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join([name] + [cells[i] for i in used]) + " |" for name, cells in rows]
    return "\n".join(out)


def report(
    states: Mapping[str, str],
    repo: str | Path,
    title: str,
    extra: Mapping[str, str],
    loaded: list[tuple[str, dict]] | None = None,
) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {k}: " + (f"<{v}>" if v.startswith("http") else f"`{v}`") for k, v in extra.items() if v]
    counts = {s: sum(1 for v in states.values() if v == s) for s in (RAN, SKIPPED, RESTORED, FAILED, NOT_RUN)}
    lines += ["- states: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), ""]
    lines += ["| stage | state |", "|---|---|"] + [f"| {s} | {st} |" for s, st in states.items()]
    table = metrics_table(repo, loaded)
    if table:
        lines += ["", "## Evaluation (metrics/evaluate; score, with the best-constant baseline)", "", table]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# The flow


def _tag_flow_run(tag: str, logger) -> None:
    """Add ``tag`` to the current Prefect flow run (best effort)."""
    from prefect import runtime
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(runtime.flow_run.id)
            client.update_flow_run(flow_run.id, tags=[*flow_run.tags, tag])
    except Exception as e:  # noqa: BLE001 - a tag is not worth failing the pipeline
        logger.warning("could not tag the flow run with %s: %s", tag, e)


def _mlflow_link(run_id: str, experiment: str) -> str:
    """The parent run's page in the MLflow UI when the store is a tracking server, else its id."""
    from flanmoe import tracking

    uri = tracking.tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return run_id
    return f"{uri.rstrip('/')}/#/experiments/{tracking.ensure_experiment(experiment)}/runs/{run_id}"


class PipelineFailed(RuntimeError):
    """A stage failed; ``states`` holds every stage's state."""

    def __init__(self, message: str, states: Mapping[str, str]):
        super().__init__(message)
        self.states = dict(states)


def _run_graph(
    graph: Mapping[str, list[str]],
    repo: Path,
    parent_run_id: str,
    experiment: str | None,
    options: Mapping[str, Any],
    keep_going: bool,
    logger,
) -> tuple[dict[str, str], dict[str, BaseException]]:
    """One task run per stage, in ``graph``'s order, each waiting for its upstream stages; a stage
    downstream of a failure (or any stage after one, unless ``keep_going``) is ``not run``."""
    states: dict[str, str] = {}
    errors: dict[str, BaseException] = {}
    done = {}
    for stage, upstream in graph.items():
        blocked = [u for u in upstream if states.get(u) in (FAILED, NOT_RUN)]
        if blocked or (errors and not keep_going):
            states[stage] = NOT_RUN
            logger.warning("stage %s: not run (upstream %s)", stage, ", ".join(blocked) or "failed")
            continue
        state = run_stage.with_options(**options)(
            stage,
            str(repo),
            parent_run_id,
            experiment,
            return_state=True,
            wait_for=[done[u] for u in upstream],
        )
        done[stage] = state
        if state.is_failed():
            states[stage] = FAILED
            errors[stage] = state.result(raise_on_failure=False)
        else:
            states[stage] = state.result()
    return states, errors


@flow(name="flan-moe")
def pipeline(
    settings: RunSettings = RunSettings(),  # noqa: B008 - every field empty; never mutated
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
    preset: str | None = None,
    targets: list[str] | None = None,
    retries: int = 1,
    retry_delay_seconds: float = 10.0,
    keep_going: bool = False,
    repo: str = ".",
) -> dict[str, str]:
    """Run dvc.yaml's stages through DVC; returns ``{stage: state}``.

    settings: the UI form (``pipelines.settings.RunSettings``); its filled fields become overrides.

    overrides: dotted params keys -> values (e.g. ``{"pretrain.steps": 50}``). None: run the workspace
      stage by stage (`dvc repro`). Given (or with ``name``): a DVC experiment, validated before
      anything runs, run stage by stage in a private copy of the workspace (the workspace is left as it
      is) and recorded with `dvc exp save` (see ``dvc exp show``).
    name: the DVC experiment's name (default ``flow-<time>``, ``<preset>-<time>``); also the MLflow
      parent run's name.
    preset: a named set of overrides, ``presets/<name>.yaml`` (``study``, ``gpu``; ``default`` is
      params.yaml as it is), under ``settings`` and ``overrides``. A preset's report folder
      (``report.dir``, e.g. docs/study) is copied back into the workspace when the run ends.
    targets: stage names (or foreach/matrix names such as ``pretrain``) to run with their upstream
      stages; None: all.
    retries, retry_delay_seconds: retries of a failed stage (a params error, exit status 2, never).
    keep_going: after a failure, still run the stages that do not depend on it (like `repro -k`).
    repo: the DVC workspace.
    """
    from prefect import runtime

    from flanmoe import tracking, tracking_client

    logger = get_run_logger()
    root = Path(repo).resolve()
    if settings is not None:
        overrides = {**settings.overrides(), **(overrides or {})}
        name = name or settings.experiment_name
    if preset and preset != "default":
        overrides = {**load_preset(root, preset), **(overrides or {})}
        name = name or time.strftime(f"{preset}-%Y%m%d-%H%M%S")
    overrides = dict(overrides or {})
    targets = list(targets or [])
    experiment = bool(overrides) or name is not None
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    run_name = name or time.strftime("flow-%Y%m%d-%H%M%S") + (f"-{flow_run_id[:4]}" if flow_run_id else "")

    # everything that can be checked is checked before anything runs
    data = yaml.safe_load((root / PARAMS_FILE).read_text()) or {}
    params = validate_overrides(data, overrides, str(root / PARAMS_FILE))
    set_params = hydra_overrides(data, overrides)
    graph = select_stages(stage_graph(root), targets)
    if experiment:
        check_experiment_name(root, run_name)

    states: dict[str, str] = {}
    errors: dict[str, BaseException] = {}
    exp_ref = ""
    with _cwd(root):  # MLflow's default store is ./mlruns.db: the one the stages use
        tags = {
            "pipeline": "prefect flow",
            "prefect_flow_run_id": flow_run_id,
            "dvc_exp": run_name if experiment else None,
            "git_commit": git_commit(),  # of the workspace (cwd), as every stage tags its run
            "overrides": json.dumps(overrides) if overrides else None,
            "targets": " ".join(targets) or None,
        }
        with tracking.start_run(run_name, params.base.experiment, tags=tags) as run:
            logger.info(
                "MLflow parent run %s (%s) in experiment %r", run_name, run.run_id, params.base.experiment
            )
            _tag_flow_run(f"mlflow_run_id:{run.run_id}", logger)
            options = {"retries": retries, "retry_delay_seconds": retry_delay_seconds}
            with contextlib.ExitStack() as stack:
                stack.enter_context(tracking_client.pipeline_helper())  # one MLflow helper for all stages
                work = root
                if experiment:
                    logger.info("DVC experiment %s: %s", run_name, " ".join(set_params) or "(no overrides)")
                    work = stack.enter_context(experiment_workspace(root, run_name, set_params))
                    graph = select_stages(stage_graph(work), targets)  # its params may change the DAG
                    checkout(str(work))
                name_or_none = run_name if experiment else None
                states, errors = _run_graph(
                    graph, work, run.run_id, name_or_none, options, keep_going, logger
                )
                if experiment and not errors:
                    exp_ref = save_experiment(run_name, list(graph) if targets else [], str(work), str(root))
                    run.set_tags({"dvc_exp_ref": exp_ref})
                report_md = work / params.report.dir / "report.md"  # the report stage's (when it ran)
                if experiment and preset and states.get("report") in (RAN, SKIPPED, RESTORED):
                    export_report(work, root, params.report.dir, logger)
                counts = {s: sum(1 for v in states.values() if v == s) for s in set(states.values())}
                run.set_tags({f"stages.{s.replace(' ', '_')}": n for s, n in counts.items()})
                loaded = evaluate_metrics(work)  # read once: the table artifact and the markdown
                scores = score_rows(work, loaded)
                study = None
                if states.get("report") in (RAN, SKIPPED, RESTORED) and report_md.is_file():
                    study = report_md.read_text()
                    run.log_artifacts(report_md.parent, "report")  # with its plots
                markdown = report(
                    states,
                    work,
                    f"flan-moe pipeline: {run_name}",
                    {
                        "DVC experiment": (f"{run_name} ({exp_ref})" if exp_ref else run_name)
                        if experiment
                        else "",
                        "overrides": " ".join(set_params),
                        "MLflow parent run": _mlflow_link(run.run_id, params.base.experiment),
                        "Prefect flow run": flow_run_id or "",
                    },
                    loaded,
                )
            create_markdown_artifact(markdown, key=ARTIFACT_KEY, description=f"stages of {run_name}")
            if scores:
                create_table_artifact(
                    scores, key=TABLE_KEY, description=f"{run_name}: scores (95% CI) of metrics/evaluate"
                )
                run.log_table(scores, "scores.json")
            if study:
                create_markdown_artifact(study, key=REPORT_KEY, description=f"{run_name}: the study report")
            if errors:
                first = next(iter(errors.values()))
                raise PipelineFailed(
                    f"failed: {', '.join(errors)}; not run: "
                    f"{', '.join(s for s, st in states.items() if st == NOT_RUN) or 'none'}\n{first}",
                    states,
                ) from first
    return states


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.flow", description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override (value in YAML: 50, [dense,switch], null); runs a DVC experiment")  # fmt: skip
    ap.add_argument("--name", help="DVC experiment (and MLflow run) name; runs a DVC experiment")
    ap.add_argument(
        "--preset", help="presets/<name>.yaml overrides (study, gpu; --set on top); runs a DVC experiment"
    )
    ap.add_argument(
        "--target", dest="targets", action="append", default=[], help="stage to run (with upstream)"
    )
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--keep-going", action="store_true")
    args = ap.parse_args(argv)
    overrides = _parse_set(args.overrides)
    if args.preset:
        try:
            load_preset(".", args.preset)  # an unknown or malformed preset: bad input, before anything runs
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        states = pipeline(
            overrides=overrides or None,
            name=args.name,
            preset=args.preset,
            targets=args.targets or None,
            retries=args.retries,
            keep_going=args.keep_going,
        )
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (PipelineFailed, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    width = max((len(s) for s in states), default=0)
    for stage, state in states.items():
        print(f"{stage:<{width}}  {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
