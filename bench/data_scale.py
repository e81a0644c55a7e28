"""Memory and time of `prepare` + `tokenize` as the data grows: peak memory should stay flat.

    python bench/data_scale.py [--sizes 50 200 1000] [--quick] [--num-proc 1] [--json PATH] [--keep DIR]

For each size (MB of jsonl in all, ~60% C4 schema: text, timestamp, url; ~40% FLAN schema: inputs,
targets, task_source, task_name, template_type; seeded word salad, so sizes and bytes repeat), writes
the files, points a scratch workspace's params.yaml at them (``kind: local``; MMLU, BBH and the
fine-tuning sets from the test fixtures, small) and runs ``python -m stages.prepare`` then
``python -m stages.tokenize`` there, each in its own process, as DVC runs them. Per stage: wall time,
MB/s of input (prepare: the jsonl bytes; tokenize: the prepared text bytes), tokens/s (tokenize),
peak RSS (``wait4``'s ``ru_maxrss``: the process and the workers it waited for) and peak anonymous
memory (``RssAnon`` of the stage process, sampled every 20 ms: what RAM must hold; the rest of RSS is
memory-mapped Arrow files, page cache the kernel drops under pressure). The smallest size runs twice
and its data/prepared and data/tokenized must match file for file (``identical``).

``--quick``: sizes 0.5 and 1 MB and a 0.2 MB tokenizer training budget (a test runs it in seconds).

``--memory-cap MB`` (Linux, a writable memory cgroup, v1 or v2: root in a container, or a delegated
systemd scope): each stage runs in a cgroup of its own whose memory (anonymous memory *and* page
cache, mapped files included) is capped at MB. RSS counts the pages of memory-mapped Arrow files the
stage has touched, which stay resident while nothing else wants the RAM; under the cap the kernel
reclaims them, so a stage that finishes under a cap far below its uncapped peak RSS shows that what
it needs is bounded, and the wall-time ratio shows what the reclaim costs. A stage killed by the cap
is reported (``oom_killed``), not raised.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as `python bench/x.py`: the repo root, not bench/, first on the path (bench/tokenize.py would
# shadow the stdlib module of that name).
# Only when run as a script: imported (tests/test_data_scale.py), sys.path[0] is someone else's (under
# pytest, tests/, which spawned processes need to import the test modules).
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)

import numpy as np  # noqa: E402
import yaml  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
C4_SHARE = 0.6  # of each size's bytes; FLAN the rest
_WORDS = 5000  # a vocabulary of made-up words, Zipf-distributed like text


def _vocabulary(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    lengths = rng.integers(2, 10, _WORDS)
    return np.array(["".join(rng.choice(letters, n)) for n in lengths])


def _sentences(rng: np.random.Generator, vocab: np.ndarray, n_words: np.ndarray) -> list[str]:
    ranks = np.minimum(rng.zipf(1.3, int(n_words.sum())), _WORDS) - 1
    words = vocab[ranks]
    ends = np.cumsum(n_words)
    return [" ".join(words[e - n : e]) + "." for n, e in zip(n_words, ends, strict=True)]


def write_c4(path: Path, mb: float, seed: int) -> int:
    """C4-schema jsonl of about ``mb`` MB; returns its bytes."""
    rng = np.random.default_rng([seed, 0])
    vocab = _vocabulary(rng)
    size, doc = 0, 0
    with open(path, "w") as f:
        while size < mb * 1e6:
            texts = _sentences(rng, vocab, rng.integers(20, 600, 10))
            for text in texts:
                line = json.dumps({"text": text, "timestamp": "2019-04-25T12:00:00Z",
                                   "url": f"https://example.com/{doc}"}) + "\n"  # fmt: skip
                f.write(line)
                size += len(line)
                doc += 1
    return path.stat().st_size


def write_flan(path: Path, mb: float, seed: int) -> int:
    """FLAN-schema jsonl of about ``mb`` MB (100 tasks, 4 template types); returns its bytes."""
    rng = np.random.default_rng([seed, 1])
    vocab = _vocabulary(rng)
    size = 0
    with open(path, "w") as f:
        while size < mb * 1e6:
            inputs = _sentences(rng, vocab, rng.integers(10, 300, 10))
            targets = _sentences(rng, vocab, rng.integers(1, 40, 10))
            tasks = rng.integers(0, 100, 10)
            templates = rng.integers(0, 4, 10)
            for x, y, t, k in zip(inputs, targets, tasks, templates, strict=True):
                line = json.dumps({"inputs": x, "targets": y, "task_source": "Flan2021", "task_name": f"task{t}",
                                   "template_type": ["zs_opt", "zs_noopt", "fs_opt", "fs_noopt"][k]}) + "\n"  # fmt: skip
                f.write(line)
                size += len(line)
    return path.stat().st_size


def _params(c4: Path, flan: Path, tokenizer_mb: float, num_proc: int) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(
        pretrain={"kind": "local", "path": str(c4)},
        flan={"kind": "local", "path": str(flan)},
        mmlu={"kind": "local", "path": str(FIXTURES / "mmlu_hub"), "name": "all"},
        bbh={"kind": "local", "path": str(FIXTURES / "bbh") + "/{config}.json", "field": "examples",
             "configs": ["boolean_expressions", "word_sorting"]},
        finetune={"kind": "local", "path": str(FIXTURES / "finetune_hub"), "configs": ["sentiment", "copy"]},
    )  # fmt: skip
    # what a real corpus needs (presets/gpu.yaml): no salient spans, T5's stream packing
    params["tokenize"].update(
        salient_fraction=0.0, packing="stream", tokenizer_train_mb=tokenizer_mb, num_proc=num_proc
    )
    return params


def _sample_anon(pid: int, peak: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except (OSError, ValueError):
            return
        stop.wait(0.02)


class MemoryCgroup:
    """A child of this process's memory cgroup (v1 ``memory.limit_in_bytes`` or v2 ``memory.max``)
    capped at ``mb``; ``join`` (a ``preexec_fn``) moves the calling process into it."""

    def __init__(self, mb: float):
        self.path, self.v2 = _own_memory_cgroup()
        self.path = self.path / f"flanmoe-bench-{os.getpid()}"
        self.path.mkdir()
        limit = "memory.max" if self.v2 else "memory.limit_in_bytes"
        (self.path / limit).write_text(str(int(mb * 2**20)))
        self.mb = mb

    def join(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        """OOM kills in the cgroup so far (v1: the failcnt of hitting the limit is not a kill)."""
        counts = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        return next((int(ln.split()[1]) for ln in counts.splitlines() if ln.startswith("oom_kill ")), 0)

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def _own_memory_cgroup() -> tuple[Path, bool]:
    """This process's memory cgroup directory and whether it is cgroup v2; exits 2 if none is writable."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            path, v2 = Path("/sys/fs/cgroup/memory") / rel.lstrip("/"), False
            break
    else:
        rel = next((ln.split(":", 2)[2] for ln in Path("/proc/self/cgroup").read_text().splitlines()
                    if ln.startswith("0::")), "/")  # fmt: skip
        path, v2 = Path("/sys/fs/cgroup") / rel.lstrip("/"), True
    if not (path.is_dir() and os.access(path, os.W_OK)):
        sys.exit(f"--memory-cap: no writable memory cgroup at {path} (needs root or a delegated cgroup)")
    return path, v2


def run_stage(stage: str, workdir: Path, env: dict, cap: MemoryCgroup | None = None) -> dict:
    """``python -m stages.<stage>`` in ``workdir``: wall seconds, peak RSS, peak anonymous memory;
    with ``cap``, inside that memory cgroup (a stage the cap kills is reported, not raised)."""
    t0 = time.perf_counter()
    kills = cap.oom_kills() if cap else 0
    proc = subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=cap.join if cap else None,
    )  # fmt: skip
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_sample_anon, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if cap and cap.oom_kills() > kills:
        return {"seconds": wall, "oom_killed": True, "log": out}
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed ({proc.returncode}):\n{out[-3000:]}")
    return {"seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "peak_anon_mb": peak[0] / 2**20,
            "log": out}  # fmt: skip


def tree_digest(root: Path) -> str:
    """sha256 over every file under ``root`` (relative path and bytes), in path order."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def run_size(
    mb: float, scratch: Path, tokenizer_mb: float, num_proc: int, seed: int, cap: MemoryCgroup | None = None
) -> dict:
    """Write ``mb`` MB of jsonl, run prepare + tokenize on it in a fresh workspace under ``scratch``."""
    work = Path(tempfile.mkdtemp(prefix=f"{mb:g}mb-", dir=scratch))
    (work / "raw").mkdir()
    c4_bytes = write_c4(work / "raw" / "c4.jsonl", mb * C4_SHARE, seed)
    flan_bytes = write_flan(work / "raw" / "flan.jsonl", mb * (1 - C4_SHARE), seed)
    params = _params(work / "raw" / "c4.jsonl", work / "raw" / "flan.jsonl", tokenizer_mb, num_proc)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns.db'}",
           "HF_DATASETS_CACHE": str(work / "hf_cache")}  # fmt: skip
    row = {"input_mb": (c4_bytes + flan_bytes) / 1e6, "c4_mb": c4_bytes / 1e6, "flan_mb": flan_bytes / 1e6}
    prep = run_stage("prepare", work, env, cap)
    shutil.rmtree(work / "hf_cache", ignore_errors=True)  # load_dataset's Arrow copy of the jsonl
    if prep.get("oom_killed"):
        return row | {"prepare": {"seconds": prep["seconds"], "oom_killed": True}}
    tok = run_stage("tokenize", work, env, cap)
    if tok.get("oom_killed"):
        prep = {k: v for k, v in prep.items() if k != "log"}
        return row | {"prepare": prep, "tokenize": {"seconds": tok["seconds"], "oom_killed": True}}
    metrics = json.loads((work / "metrics" / "tokenize.json").read_text())
    tokens = metrics["pretrain"]["tokens"] + metrics.get("flan", {}).get("tokens", 0)
    row["prepare"] = {k: v for k, v in prep.items() if k != "log"} | {
        "mb_per_s": row["input_mb"] / prep["seconds"]
    }
    row["tokenize"] = {k: v for k, v in tok.items() if k != "log"} | {
        "mb_per_s": row["input_mb"] / tok["seconds"],
        "tokens": tokens,
        "tokens_per_s": tokens / tok["seconds"],
    }
    row["digest"] = {d: tree_digest(work / "data" / d) for d in ("prepared", "tokenized")}
    row["workdir"] = str(work)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[50, 200, 1000], help="MB of jsonl per run")
    ap.add_argument("--quick", action="store_true", help="sizes 0.5 and 1 MB, tokenizer on 0.2 MB")
    ap.add_argument("--tokenizer-mb", type=float, default=None, help="tokenize.tokenizer_train_mb")
    ap.add_argument("--num-proc", type=int, default=1, help="tokenize.num_proc")
    ap.add_argument("--seed", type=int, default=0, help="of the generated text")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--keep", type=Path, default=None, help="keep the workspaces under this folder")
    ap.add_argument("--memory-cap", type=float, default=None, metavar="MB",
                    help="run each stage in a memory cgroup capped at MB (page cache included)")  # fmt: skip
    args = ap.parse_args(argv)
    sizes = [0.5, 1.0] if args.quick else sorted(args.sizes)
    tokenizer_mb = args.tokenizer_mb or (
        0.2 if args.quick else _params(Path(), Path(), 20.0, 1)["tokenize"]["tokenizer_train_mb"]
    )
    cap = MemoryCgroup(args.memory_cap) if args.memory_cap else None
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench-data-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        rows = [run_size(mb, scratch, tokenizer_mb, args.num_proc, args.seed, cap) for mb in sizes]
        again = run_size(sizes[0], scratch, tokenizer_mb, args.num_proc, args.seed, cap)
        identical = "digest" in again and again.get("digest") == rows[0].get("digest")
    finally:
        if cap:
            cap.remove()
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'input MB':>9} | {'stage':8} | {'wall s':>7} | {'MB/s':>6} | {'Mtok/s':>6} | "
          f"{'peak RSS MB':>11} | {'peak anon MB':>12}")  # fmt: skip
    for row in rows:
        for stage in ("prepare", "tokenize"):
            r = row.get(stage)
            if r is None or r.get("oom_killed"):
                print(
                    f"{row['input_mb']:9.1f} | {stage:8} | "
                    + ("killed by the memory cap" if r else "not run")
                )
                continue
            mtok = f"{r['tokens_per_s'] / 1e6:6.3f}" if "tokens_per_s" in r else f"{'':6}"
            print(f"{row['input_mb']:9.1f} | {stage:8} | {r['seconds']:7.1f} | {r['mb_per_s']:6.2f} | {mtok} | "
                  f"{r['peak_rss_mb']:11.0f} | {r['peak_anon_mb']:12.0f}")  # fmt: skip
    growth = {
        stage: rows[-1][stage]["peak_rss_mb"] / rows[0][stage]["peak_rss_mb"]
        for stage in ("prepare", "tokenize")
        if all("peak_rss_mb" in r.get(stage, {}) for r in (rows[0], rows[-1]))
    }
    print("peak RSS, largest / smallest: " + ", ".join(f"{k} {v:.2f}x" for k, v in growth.items()))
    if cap:
        print(f"every stage in a memory cgroup capped at {args.memory_cap:g} MB (page cache included)")
    print(f"same input twice, data/prepared and data/tokenized identical: {identical}")
    result = {
        "sizes_mb": sizes,
        "tokenizer_train_mb": tokenizer_mb,
        "num_proc": args.num_proc,
        "memory_cap_mb": args.memory_cap,
        "cpus": os.cpu_count(),
        "rows": [{k: v for k, v in row.items() if k != "workdir"} for row in rows],
        "peak_rss_growth": growth,
        "identical": identical,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["identical"] else 1)
