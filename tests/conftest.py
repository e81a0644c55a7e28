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
