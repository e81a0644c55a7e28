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


def test_cpu_model_tells_apart_models_behind_one_name():
    """A VM's model name alone ("AMD EPYC") covers CPUs whose floats differ: family / model / stepping
    and the widest vector unit are recorded with it, from the first processor's block."""

    def info(model: str, flags: str) -> str:
        block = f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {model}\n"
        block += f"model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse4_2 {flags}\n"
        return block + "\n" + block.replace("processor\t: 0", "processor\t: 1")

    milan, genoa = cpu_model(info("1", "avx avx2")), cpu_model(info("17", "avx avx2 avx512f avx512bw"))
    assert milan == "AMD EPYC (family 25 model 1 stepping 1, avx2)"
    assert genoa == "AMD EPYC (family 25 model 17 stepping 1, avx512)"
    assert cpu_model("model name\t: Some CPU\n") == "Some CPU"  # nothing else known: the name alone
    assert cpu_model("") not in ("", "AMD EPYC")  # no /proc/cpuinfo: platform's answer
