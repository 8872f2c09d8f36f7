"""The kernels through Triton's real compiler (to a cubin for sm_90), on any machine: the interpreter that
runs the other tests on the CPU forgives what the code generator rejects."""

import os
import subprocess
import sys


def test_kernels_compile_for_hopper():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "tritongru.compile_check", "--arch", "90", "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
