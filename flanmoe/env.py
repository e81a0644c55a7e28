"""The environment the project runs in: offline switches, and quiet progress bars in logs.

``flanmoe/__init__.py`` applies it on import, before anything imports ``datasets`` or
``huggingface_hub`` (they read these variables at import time). A value the user set wins.
"""

from __future__ import annotations

import os
import sys

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
    if not sys.stderr.isatty():  # progress bars in a log file (DVC, CI) are noise
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU model, as exactly as ``/proc/cpuinfo`` (or ``cpuinfo``, its text) tells it: the model
    name, then family / model / stepping and the widest vector unit, e.g. ``AMD EPYC (family 25
    model 1 stepping 1, avx2)``. Floats, and so every score, reproduce bit for bit on the same CPU model
    only, and a virtual machine's model name alone names several of them (two VMs that both said ``AMD
    EPYC`` gave different scores from the same params). Elsewhere (no ``/proc/cpuinfo``):
    ``platform.processor()``."""
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor tells it: every core of a machine is the same model
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine() or "unknown"
    ids = " ".join(
        f"{k} {fields[f]}"
        for k, f in (("family", "cpu family"), ("model", "model"), ("stepping", "stepping"))
        if fields.get(f)
    )
    flags = set(fields.get("flags", "").split())
    simd = next((f.removesuffix("f") for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "")
    detail = ", ".join(x for x in (ids, simd) if x)
    return f"{name} ({detail})" if detail else name


def machine() -> dict[str, object]:
    """What a result's reproducibility depends on: ``cpu_model``, ``cpus`` (logical), ``torch_version``
    (installed; torch is not imported) and ``torch_threads`` (when torch is already imported)."""
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_version": torch_version,
        "torch_threads": torch_threads(),
    }


def torch_threads() -> int | None:
    """torch's intra-op threads, when torch is already imported (None otherwise: it is not imported)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
