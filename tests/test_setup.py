"""scripts/bootstrap.sh refuses llama.cpp builds that only run on the machine that made them."""

from __future__ import annotations

import os
import subprocess

import pytest

from servers import REPO


def bootstrap(tmp_path, cpu: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECASSIST_LLAMA_CPU": cpu, "VENV": str(tmp_path / "venv"),
           "RECASSIST_WHEEL_CACHE": str(tmp_path / "wheels")}
    return subprocess.run(["bash", str(REPO / "scripts" / "bootstrap.sh"), "local"], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize(
    "cpu, said",
    [
        ("-DGGML_NATIVE=ON", "GGML_NATIVE=ON"),
        ("-DGGML_AVX2=ON -DGGML_AMX_INT8=ON", "GGML_AMX_INT8=ON"),
        ("-DGGML_AVX2=ON -DCMAKE_C_FLAGS=-march=native", "march=native"),
        ("native", "use x86-64-v2, x86-64-v3 (default), x86-64-v4"),
    ],
)
def test_setup_refuses_a_build_for_this_machine_only_before_installing_anything(tmp_path, cpu, said):
    proc = bootstrap(tmp_path, cpu)
    assert proc.returncode == 1
    assert said in proc.stderr
    assert not (tmp_path / "venv").exists() and not (tmp_path / "wheels").exists()
