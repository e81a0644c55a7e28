"""The probe of ``bench/stage_overhead.py``: where a stage process spends its wall time.

Put this folder on ``PYTHONPATH`` and set ``FLANMOE_OVERHEAD_DIR``: every ``python -m stages.<name>``
process (and only those: DVC, MLflow helpers and the pipeline driver are left alone) then writes
``<dir>/<pid>.json`` when it exits, with its start and end times and the exclusive seconds of each
part. It changes no result: it only wraps functions with timers, so it measures any commit of the
project, before or after a change.

Parts: ``imports`` (modules actually loaded, split by top package: torch, mlflow, datasets + pyarrow,
other; a module of none of them counts to the group of the import it happens in), and the functions
listed in ``PROBES`` (params validation, data loading, model build / load, the work, export, MLflow,
hashing and git). Time is exclusive: a probe inside another counts once, in the inner part.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time

_OUT = os.environ.get("FLANMOE_OVERHEAD_DIR")
_ARGV = list(getattr(sys, "orig_argv", []))

# (module, dotted attribute, part). A missing module or attribute is skipped: the same table serves
# every commit. Methods are wrapped on their class; context managers by their __enter__/__exit__.
PROBES: list[tuple[str, str, str]] = [
    ("flanmoe.config", "load_params_or_exit", "params"),
    ("datasets", "load_from_disk", "data"),
    ("flanmoe.train.data", "split_validation", "data"),
    ("flanmoe.train.data", "eval_batches", "data"),
    ("flanmoe.train.data", "PackedBatches.__init__", "data"),
    ("flanmoe.train.data", "TokenBudgetBatches.__init__", "data"),
    ("flanmoe.train.mixture", "mixture_rates", "data"),
    ("flanmoe.model.transformer", "build_model", "model"),
    ("flanmoe.model.transformer", "FlanMoEModel.from_pretrained", "model"),  # before load_pretrained
    ("flanmoe.model.pretrained", "load_pretrained", "model"),
    ("flanmoe.model", "build_model", "model"),
    ("flanmoe.model.hf", "load_hf", "model"),
    ("flanmoe.train.launch", "setup_distributed", "model"),
    ("flanmoe.train.launch", "prepare_model", "model"),
    ("flanmoe.data.tokenizer", "load_tokenizer", "model"),
    ("flanmoe.train.trainer", "Trainer.fit", "work"),
    ("flanmoe.eval.suites", "Evaluator.mmlu", "work"),
    ("flanmoe.eval.suites", "Evaluator.bbh", "work"),
    ("flanmoe.eval.suites", "Evaluator.pairs", "work"),
    ("flanmoe.eval.suites", "Evaluator.routing_summary", "work"),
    ("flanmoe.data.tokenize", "tokenize_prepared", "work"),
    ("flanmoe.data.embedded", "build_suite", "work"),
    ("flanmoe.data.sources", "load_source", "work"),
    ("flanmoe.data.prepared", "save", "work"),
    ("flanmoe.data.prepared", "summarize", "work"),
    ("flanmoe.report.table", "build_table", "work"),
    ("flanmoe.report.findings", "findings", "work"),
    ("flanmoe.report.plots", "write_figures", "work"),
    ("flanmoe.report.render", "to_markdown", "work"),
    ("flanmoe.report.render", "to_html", "work"),
    ("flanmoe.model.pretrained", "save_pretrained", "export"),
    ("flanmoe.train.trainer", "state_dict_for_export", "export"),
    ("stages.common", "write_json", "export"),  # before flanmoe.atomic (a --baseline commit)
    ("flanmoe.atomic", "write_json", "export"),
    ("flanmoe.tracking", "ensure_experiment", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_params", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_metrics", "mlflow"),
    ("flanmoe.tracking", "StageRun.set_tags", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_dict", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_artifact", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_artifacts", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_table", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_datasets", "mlflow"),
    ("flanmoe.tracking", "StageRun.log_model", "mlflow"),
    ("flanmoe.tracking_client", "BackgroundRun.__init__", "mlflow"),
    ("flanmoe.tracking_client", "BackgroundRun._send", "mlflow"),
    ("flanmoe.tracking_client", "BackgroundRun.finish", "mlflow"),
    ("mlflow", "start_run", "mlflow"),
    ("mlflow", "end_run", "mlflow"),
    ("stages.common", "input_hashes", "hashing"),
    ("stages.common", "dvc_md5", "hashing"),
    ("stages.common", "git_commit", "hashing"),
    ("stages.training", "checkpoint_fingerprint", "hashing"),
]

IMPORT_GROUPS = {"torch": "torch", "mlflow": "mlflow", "datasets": "datasets", "pyarrow": "datasets"}


class _Clock:
    """A stack of timed frames: each part gets its exclusive time."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.stack: list[list] = []  # [part, start, child seconds]

    def enter(self, part: str) -> None:
        self.stack.append([part, time.perf_counter(), 0.0])

    def leave(self) -> None:
        part, start, child = self.stack.pop()
        elapsed = time.perf_counter() - start
        self.parts[part] = self.parts.get(part, 0.0) + elapsed - child
        if self.stack:
            self.stack[-1][2] += elapsed


CLOCK = _Clock()


def _timed(fn, part: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        CLOCK.enter(part)
        try:
            return fn(*args, **kwargs)
        finally:
            CLOCK.leave()

    wrapper.__flanmoe_probe__ = True
    return wrapper


def _wrap(module, dotted: str, part: str) -> None:
    owner_path, _, name = dotted.rpartition(".")
    owner = module
    for attr in owner_path.split(".") if owner_path else []:
        owner = vars(owner).get(attr)  # never getattr: a lazy package would import what it names
        if owner is None:
            return
    raw = vars(owner).get(name)
    if raw is None or getattr(raw, "__flanmoe_probe__", False):
        return
    if isinstance(raw, classmethod):
        setattr(owner, name, classmethod(_timed(raw.__func__, part)))
    elif isinstance(raw, staticmethod):
        setattr(owner, name, staticmethod(_timed(raw.__func__, part)))
    elif callable(raw):
        setattr(owner, name, _timed(raw, part))


def _install() -> None:
    import importlib._bootstrap as bootstrap  # the module CPython calls for every import that loads

    frozen = sys.modules.get("_frozen_importlib", bootstrap)
    find_and_load = frozen._find_and_load
    by_module: dict[str, list[tuple[str, str]]] = {}
    for mod, attr, part in PROBES:
        by_module.setdefault(mod, []).append((attr, part))

    def probed_find_and_load(name, import_):
        # each module's own time goes to its top package's group if that has one (torch, mlflow, ...),
        # else to the group of the import it happens in (numpy inside torch: torch), else "other"
        parent = next((f[0] for f in reversed(CLOCK.stack) if f[0].startswith("imports/")), None)
        group = IMPORT_GROUPS.get(name.partition(".")[0]) or (
            parent[len("imports/") :] if parent else "other"
        )
        CLOCK.enter(f"imports/{group}")
        try:
            module = find_and_load(name, import_)
        finally:
            CLOCK.leave()
        for attr, part in by_module.get(name, ()):
            _wrap(module, attr, part)
        return module

    frozen._find_and_load = probed_find_and_load


def _create_time() -> float:
    """The process's start (epoch seconds): its start in clock ticks since boot (/proc), against the
    boot-time clock now (10 ms resolution)."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])
        since_start = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - since_start
    except (OSError, ValueError, AttributeError):
        return time.time()


def _dump(t_probe: float, p_probe: float) -> None:
    record = {
        "argv": _ARGV,
        "pid": os.getpid(),
        "created": _CREATED,
        "probe_start": t_probe,
        "end": t_probe + (time.perf_counter() - p_probe),
        "parts": CLOCK.parts,
    }
    path = os.path.join(_OUT, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def _is_stage(argv: list[str]) -> bool:
    return (
        "-m" in argv
        and argv[argv.index("-m") + 1 :][:1] != []
        and argv[argv.index("-m") + 1].startswith("stages.")
    )


if _OUT and _is_stage(_ARGV):
    _install()
    _CREATED = _create_time()
    atexit.register(_dump, time.time(), time.perf_counter())
