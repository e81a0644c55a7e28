"""Orchestration over dvc.yaml: `make run` (pipelines.repro) and, later, the Prefect flows."""
