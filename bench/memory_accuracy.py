"""How close is the memory estimate to the measurement? One row per model x dtype x device.

    .venv/bin/python bench/memory_accuracy.py [--out .cache/bench-memory] [--batch-size 2]

Models: the tiny embedded checkpoint (0.17M parameters: the fixed runtime overhead
is nearly all of it) and a random-initialised ~105M-parameter LLaVA built here
(no download). CPU: float32 and bfloat16, peak RSS of a fresh subprocess. CUDA
(when available): float16 and bfloat16 (bf16 only where the GPU has it natively),
max_memory_reserved + the CUDA context. Prints ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_throughput import build_embedded  # noqa: E402


def main() -> None:
    import torch

    from vlm_lab import memory, memory_synthetic
    from vlm_lab.memory_measure import measure
    from vlm_lab.models import supports_bfloat16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".cache/bench-memory", help="where the 105M model is built (default: %(default)s)")
    parser.add_argument("--checkpoints", default=".cache/test-checkpoints/shapes", help="the tiny training run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()

    tiny_ckpt = build_embedded(Path(args.checkpoints))[-1]  # pinned, in a process of its own: the suite's weights
    big = memory_synthetic.build_llava(Path(args.out) / "llava-100m", memory_synthetic.LLAVA_100M)
    runs = [("cpu", "float32"), ("cpu", "bfloat16")]
    if torch.cuda.is_available():
        runs += [("cuda", "float16")] + ([("cuda", "bfloat16")] if supports_bfloat16(torch.device("cuda")) else [])
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"{'model':<18} {'params':>8} {'device':<6} {'dtype':<9} {'estimated':>12} {'measured':>12} {'error':>8}  load est/meas")
    for name, ref in (("tiny (shapes)", tiny_ckpt), ("llava-100m", big)):
        for device, dtype in runs:
            est = memory.estimate(ref, dtype=dtype, device=device, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
            m = measure(ref, dtype=dtype, device=device, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, image_shape=(est.image.height, est.image.width))
            if m.prompt_tokens != est.prompt_tokens:
                est = memory.estimate(ref, dtype=dtype, device=device, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, prompt_tokens=m.prompt_tokens)
            err = (est.peak_bytes() - m.peak_bytes) / m.peak_bytes
            print(
                f"{name:<18} {est.num_params / 1e6:>7.1f}M {device:<6} {dtype:<9} {memory.human_bytes(est.peak_bytes()):>12} "
                f"{memory.human_bytes(m.peak_bytes):>12} {err:>+8.1%}  {memory.human_bytes(est.load_bytes())} / {memory.human_bytes(m.load_bytes)}"
            )


if __name__ == "__main__":
    main()
