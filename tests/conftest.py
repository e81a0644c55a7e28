"""Test session setup: offline switches and a private datasets cache, before anything imports datasets."""

import os
import sys
import tempfile
from pathlib import Path

from flanmoe.env import OFFLINE_ENV

for _k, _v in OFFLINE_ENV.items():
    os.environ[_k] = _v
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="flanmoe-hf-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def python() -> str:
    return sys.executable


# Seconds each heavy test file takes (one worker, 2-core AMD EPYC family 25 model 1, 2026-12-06; the
# files under ~20 s are left out). `make test` runs two workers that take whole files
# (--dist loadfile) in collection order (--no-loadscope-reorder): longest first, so a 100 s file does
# not start last while the other worker idles (xdist's own order, by test count, put the one-test
# test_pipeline.py last: ~50 s of one idle core). Only the order depends on these numbers.
HEAVY_FILES = {
    "test_pretrain_stage.py": 198,
    "test_evaluate_stage.py": 170,
    "test_parallel.py": 141,
    "test_ui.py": 110,
    "test_flow.py": 105,
    "test_pipeline.py": 101,
    "test_hf_init.py": 97,
    "test_data_scale.py": 76,
    "test_report.py": 73,
    "test_seeds.py": 62,
    "test_finetune_stage.py": 62,
    "test_compile.py": 54,
    "test_instruct_stage.py": 47,
    "test_prepare.py": 45,
    "test_setup_errors.py": 38,
    "test_startup.py": 32,
    "test_tokenize_stage.py": 31,
    "test_extra_seeds.py": 31,
    "test_trainer.py": 30,
    "test_gpu_check.py": 24,
    "test_heldout_pairs.py": 23,
}


def pytest_collection_modifyitems(config, items):
    """The heavy files first, longest first (HEAVY_FILES); a file's tests keep their order."""
    items.sort(key=lambda item: -HEAVY_FILES.get(item.path.name, 0))
