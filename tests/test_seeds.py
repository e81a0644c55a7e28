"""Replicates (``base.seeds``): dvc.yaml runs every training and evaluation stage once per seed, each
stage takes its replicate with ``--seed`` (refused, before any work, when it is not one of the seeds),
and the freezing ablation adds its stages only when asked for."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.stage_helpers import REPO, run_stage, write_params


def _stages(work, **sections) -> list[str]:
    write_params(work, **sections)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.split()


def test_dvc_matrix_runs_every_training_and_evaluation_stage_per_seed(tmp_path):
    names = _stages(
        tmp_path,
        base={"seeds": [7, 8]},
        archs={"run": ["dense", "switch"]},
        finetune={"tasks": ["list_sum"], "scenarios": ["direct", "after_it"]},
        freeze_ablation={"archs": ["switch"], "freeze": ["gate", "experts"]},
    )
    assert names[:2] == ["prepare", "tokenize"] and names[-1] == "report"  # once: not per seed
    for seed in (7, 8):
        for arch in ("dense", "switch"):
            assert {f"pretrain@{arch}-{seed}", f"instruct@{arch}-{seed}"} <= set(names)
            assert {f"evaluate@{arch}-{m}-{seed}" for m in ("pretrain", "instruct")} <= set(names)
            for s in ("direct", "after_it"):
                assert f"finetune@{arch}-list_sum-{s}-{seed}" in names
                assert f"evaluate_finetune@{arch}-list_sum-{s}-{seed}" in names
        for f in ("gate", "experts"):  # the ablation: the MoE arch only, after IT only
            assert f"finetune_freeze@switch-list_sum-{f}-{seed}" in names
            assert f"evaluate_freeze@switch-list_sum-{f}-{seed}" in names
    assert len(names) == 2 + 2 * (2 * 2 + 2 * 2 + 2 * 2 * 2 + 2 * 2) + 1
    assert not any(n.startswith("finetune_freeze@dense") for n in names)


def test_no_freeze_ablation_by_default(tmp_path):
    names = _stages(tmp_path)
    assert not [n for n in names if "freeze" in n]
    assert "pretrain@switch-1234" in names  # the shipped seeds: [1234]


@pytest.mark.parametrize(
    ("stage", "args", "seeds", "message"),
    [
        ("pretrain", ("switch", "--seed", "7"), [1234], "--seed: 7 is not one of base.seeds [1234]"),
        ("pretrain", ("switch",), [1, 2], "--seed: base.seeds has 2 seeds [1, 2]; pass one of them"),
        (
            "instruct",
            ("switch", "--seed", "x"),
            [1234],
            "--seed: expected a seed of base.seeds [1234], got 'x'",
        ),
        (
            "finetune",
            ("switch", "list_sum", "after_it", "--seed", "1234", "--freeze", "everything"),
            [1234],
            "--freeze: 'everything' is not one of",
        ),
        (
            "evaluate",
            ("models/instruct/s3/switch", "--seed", "3"),
            [1234],
            "--seed: 3 is not one of base.seeds",
        ),
    ],
)
def test_a_stage_refuses_a_seed_outside_base_seeds(tmp_path, stage, args, seeds, message):
    write_params(tmp_path, base={"seeds": seeds})
    proc = run_stage(stage, tmp_path, check=False, args=args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
