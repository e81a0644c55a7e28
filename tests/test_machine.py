"""What a result's reproducibility depends on is recorded: the CPU model, torch's version and threads."""

from __future__ import annotations

import subprocess
import sys

from flanmoe.env import cpu_model, machine


def test_machine_names_the_cpu_and_torch_without_importing_torch():
    code = "import sys; from flanmoe.env import machine; m = machine(); print(m['torch_threads'], 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["None", "False"]  # threads are known only once a stage has imported torch
    m = machine()
    assert m["cpu_model"] == cpu_model() and m["cpu_model"] not in ("", "unknown")
    assert m["torch_version"] and m["torch_version"].split("+")[0].count(".") == 2
    assert isinstance(m["cpus"], int) and m["cpus"] >= 1


def test_threads_are_torchs_once_imported():
    import torch

    assert machine()["torch_threads"] == torch.get_num_threads()
