"""Orchestration over dvc.yaml: `make run` (pipelines.repro) and the Prefect flow (pipelines.flow)."""

import os

import flanmoe  # noqa: F401 - applies the offline environment before prefect reads its settings

# Prefect reads its settings when it is imported (every module here imports it after this package): an
# ephemeral server on a loaded machine needs longer than the default 20 s to start.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
