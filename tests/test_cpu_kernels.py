"""The tiny build gives the same weights on every x86 CPU with AVX2 (vlm_lab/cpu_kernels.py)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys

import pytest

from vlm_lab import cpu_kernels

# sha256 of each default checkpoint's model.safetensors, pinned kernels, seed 0 (checkpoint format 5, trained on an
# Intel Xeon). Notebook 02's checked outputs and README's accuracy table come from these weights: a CPU that trains
# others fails here first.
DEFAULT_BUILD = {
    "checkpoint-0": "282f96a07285b8e76f629e4c9a476c27abe7d484883b15bdaef7dd0abb8d29b3",
    "checkpoint-250": "349e20c9634cff8ca38185e1f636a54a700bbeed4a111cbc078f7dbe04088757",
    "checkpoint-500": "1acc3cc43aaae794b4860b11ab90afa37bf0292a02f4f24afe97aa04b0a153a1",
    "checkpoint-750": "c8078d9a5bb6fc0c9567ee42ffcb5db88e94852b17be3f75ba497e34b4438543",
    "checkpoint-1000": "1e14e760934be8ae81e0a73b4f7088518094531c5df066885239b1e57348c1f5",
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


def test_the_build_convolves_without_a_library_that_blocks_its_sums_by_the_cpus_caches():
    """oneDNN and NNPACK size the blocks of a convolution's sum by the CPU's caches (NNPACK's implicit GEMM: its
    L1 cache share / 28 floats), so the patch embedding summed in another order on another CPU. The build runs it
    through torch's own convolution (im2col + MKL's GEMM, pinned), and gives the caller's settings back after."""
    import torch

    from vlm_lab import tiny
    from vlm_lab.config import TrainConfig

    config = TrainConfig()
    pixels = torch.zeros(config.batch_size, 3, 64, 64)  # a training batch of the 64x64 images
    weight = torch.zeros(64, 3, 8, 8, requires_grad=True)  # the patch embedding: 8x8 patches, stride 8

    def backend() -> str:
        return str(torch._C._select_conv_backend(pixels, weight, None, (8, 8), (0, 0), (1, 1), False, (0, 0), 1))

    before = (backend(), torch._C._get_nnpack_enabled(), torch.backends.mkldnn.enabled)
    assert tiny._one_thread(backend) == "_ConvBackend.Slow2d", "the patch embedding runs through a cache-blocked library"
    assert (backend(), torch._C._get_nnpack_enabled(), torch.backends.mkldnn.enabled) == before
