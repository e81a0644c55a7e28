"""Offline switches: the project never needs the network at run time.

Import this (and call ``apply_offline_env``) before importing ``datasets``/``huggingface_hub``:
they read these variables at import time.
"""

from __future__ import annotations

import os

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def apply_offline_env() -> None:
    """Set the offline switches unless the user already set them (an explicit value wins)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
