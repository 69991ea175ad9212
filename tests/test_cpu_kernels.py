"""The tiny build gives the same weights on every x86 CPU with AVX2 (vlm_lab/cpu_kernels.py)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys

import pytest

from vlm_lab import cpu_kernels

# sha256 of each default checkpoint's model.safetensors, pinned kernels, seed 0 (checkpoint format 4). Notebook 02's
# checked outputs and README's accuracy table come from these weights: a CPU that trains others fails here first.
DEFAULT_BUILD = {
    "checkpoint-0": "282f96a07285b8e76f629e4c9a476c27abe7d484883b15bdaef7dd0abb8d29b3",
    "checkpoint-250": "befe63017063982015ee4dea5e384b03bd7e691386e63c9dc1e92ffbf7297ccf",
    "checkpoint-500": "0490796e0ffcfa00134a14d2a71da45f8d9c5cf6350fe3b02ae9cd92c2fa1181",
    "checkpoint-750": "9efbec8fd35637eb73d559b3fb456ca3a0814ea41545089b4445c307c6872750",
    "checkpoint-1000": "c0a39b26326dd60c054e81845ea53ffdecc5de3bafb4f2f39b55bbc30cb50c0f",
}


@pytest.mark.skipif(not cpu_kernels.reproducible_env(), reason="kernels are pinned on x86 CPUs with AVX2 only")
def test_the_default_build_has_the_same_weights_on_every_x86_cpu_with_avx2(tiny_checkpoints):
    got = {p.name: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest() for p in tiny_checkpoints}
    flags = {k: os.environ.get(k) for k in cpu_kernels.REPRODUCIBLE_ENV}
    assert got == DEFAULT_BUILD, f"this CPU ({platform.processor() or platform.machine()}, {flags}) trained other weights"


def test_the_kernels_are_pinned_before_torch_runs_and_a_users_setting_wins(tmp_path):
    code = ("import os; from vlm_lab.cpu_kernels import pin_cpu_kernels; pinned = pin_cpu_kernels(); import torch; "
            "print(pinned.get('MKL_CBWR'), torch.backends.cpu.get_cpu_capability())")
    env = {k: v for k, v in os.environ.items() if k not in cpu_kernels.REPRODUCIBLE_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    if cpu_kernels.reproducible_env():
        assert out == ["COMPATIBLE", "AVX2"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["AUTO", "DEFAULT"]  # what the user set is kept


@pytest.mark.parametrize("flags, pinned", [("fpu sse2 avx avx2 fma avx512f", True), ("fpu sse2 avx fma", False),
                                           ("fpu sse2 avx2", False), ("", False)])
def test_only_a_cpu_with_avx2_and_fma_is_pinned(tmp_path, flags, pinned):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    expected = cpu_kernels.REPRODUCIBLE_ENV if pinned and platform.machine().lower() in ("x86_64", "amd64") else {}
    assert cpu_kernels.reproducible_env(str(info)) == expected
    assert cpu_kernels.reproducible_env(str(tmp_path / "missing")) == {}
