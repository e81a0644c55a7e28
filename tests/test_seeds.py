"""Replicates (``base.seeds``): dvc.yaml runs every training and evaluation stage once per seed, each
stage takes its replicate with ``--seed`` (refused, before any work, when it is not one of the seeds),
and the freezing ablation adds its stages only when asked for."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from tests.stage_helpers import REPO, run_stage, write_params


def _stage_list(work, *flags: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", *flags],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def _stages(work, **sections) -> list[str]:
    write_params(work, **sections)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, check=True)
    return _stage_list(work, "--name-only").split()


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


EXTRA = ("pretrain_extra", "instruct_extra", "evaluate_extra")


def test_extra_seeds_run_pretrain_instruct_and_their_evaluation_of_extra_archs_only(tmp_path):
    names = _stages(
        tmp_path,
        base={"seeds": [1], "extra_seeds": [7, 8], "extra_archs": ["dense", "switch"]},
        archs={"run": ["dense", "switch", "gshard"]},
        finetune={"tasks": ["list_sum"], "scenarios": ["after_it"]},
    )
    extra = sorted(n for n in names if n.split("@")[0] in EXTRA)
    want = [
        f"{s}@{a}-{seed}"
        for s in ("pretrain_extra", "instruct_extra")
        for a in ("dense", "switch")
        for seed in (7, 8)
    ]
    want += [
        f"evaluate_extra@{a}-{m}-{seed}"
        for a in ("dense", "switch")
        for m in ("pretrain", "instruct")
        for seed in (7, 8)
    ]
    assert extra == sorted(want)
    assert not [n for n in names if n.split("@")[0] not in EXTRA and n.endswith(("-7", "-8"))]  # no finetune
    assert len(names) == 2 + 3 * (2 + 1 + 2 + 1) + len(want) + 1  # base seed: 3 archs, 4 stages (2 evaluate)


def test_extra_stages_are_their_base_stages_on_other_seeds(tmp_path):
    """The *_extra stages merge their base stage's body (YAML merge keys): the same command, deps,
    params and outs, only the matrix differs; with no extra seeds the stage list is exactly that of
    dvc.yaml without them."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in EXTRA:
        base = spec[name.removesuffix("_extra")]
        assert {k: v for k, v in spec[name].items() if k != "matrix"} == {
            k: v for k, v in base.items() if k != "matrix"
        }
        assert spec[name]["matrix"]["seed"] == "${base.extra_seeds}"
        assert spec[name]["matrix"]["arch"] == "${base.extra_archs}"
    _stages(tmp_path, freeze_ablation={"archs": ["switch"], "freeze": ["gate"]})
    shipped = _stage_list(tmp_path)
    without = {"stages": {k: v for k, v in spec.items() if k not in EXTRA}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(without, sort_keys=False))
    assert _stage_list(tmp_path) == shipped and "pretrain@dense-1234" in shipped


@pytest.mark.parametrize(
    ("stage", "args", "message"),
    [
        (
            "pretrain",
            ("gshard", "--seed", "7"),
            "--seed: 7 is one of base.extra_seeds, which only base.extra_archs ['dense', 'switch'] run;"
            " gshard runs base.seeds [1234]",
        ),
        (
            "finetune",
            ("switch", "list_sum", "after_it", "--seed", "7"),
            "--seed: 7 is one of base.extra_seeds, which only pretrain, instruct and their evaluation run;"
            " this stage runs base.seeds [1234]",
        ),
        (
            "instruct",
            ("switch", "--seed", "9"),
            "--seed: 9 is not one of base.seeds [1234] or base.extra_seeds [7]",
        ),
        (  # evaluate reads the arch from the model directory
            "evaluate",
            ("models/instruct/s7/gshard", "--seed", "7"),
            "--seed: 7 is one of base.extra_seeds, which only base.extra_archs ['dense', 'switch'] run;"
            " gshard runs base.seeds [1234]",
        ),
        (
            "evaluate",
            ("models/finetune/s7/switch-list_sum-after_it", "--task", "list_sum", "--seed", "7"),
            "--seed: 7 is one of base.extra_seeds, which only pretrain, instruct and their evaluation run;"
            " this stage runs base.seeds [1234]",
        ),
    ],
)
def test_a_stage_refuses_an_extra_seed_it_does_not_run(tmp_path, stage, args, message):
    write_params(
        tmp_path, base={"seeds": [1234], "extra_seeds": [7]}, archs={"run": ["dense", "switch", "gshard"]}
    )
    proc = run_stage(stage, tmp_path, check=False, args=args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


@pytest.mark.parametrize(
    ("stage", "args", "message"),
    [
        ("instruct", ("switch", "--seed", "7"), "data/tokenized/flan not found"),
        (
            "evaluate",
            ("models/pretrain/s7/dense", "--seed", "7"),
            "models/pretrain/s7/dense is not an exported",
        ),
    ],
)
def test_a_stage_with_extra_replicates_takes_an_extra_seed(tmp_path, stage, args, message):
    write_params(tmp_path, base={"seeds": [1234], "extra_seeds": [7]})
    proc = run_stage(stage, tmp_path, check=False, args=args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr  # past the seed check: no input


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
