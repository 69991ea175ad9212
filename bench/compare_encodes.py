"""A first comparison past the encoding cache's bound: encodes (processor calls) and time, a baseline commit vs the tree.

Makes N samples of the shapes set as 512x512 noisy JPEGs (``compare_rerun.make_data``), lowers
``compare.ENCODING_CACHE_BYTES`` so that only ``--held`` of the batches fit (512 MiB holds about 380 LLaVA-336 images:
every real evaluation set is past it), and times a first ``compare`` of 3 shapes checkpoints (one processor) in a fresh
process each, with the code of ``--baseline`` (a git revision, extracted to a temp folder) and with this tree's. Prints
the samples encoded by each, the time spent encoding them, the whole run's wall and CPU time (on shared cores the
wall time varies by tens of percent between runs: read the CPU and encode times), the ratios, and whether the
outputs are the same.
Measured on 2 shared CPU cores, 2048 samples, batch size 64, a quarter of the batches held (the defaults): before the
check counted each (prompt, image size) once past the bound, 6656 samples encoded (the check's 2048, then 1536 per
checkpoint) in 30-31 s of a 55-84 s run; after, 5184 (the check's 512 held + 64 refused) in 22-23 s of a 30-65 s run;
best runs 54.5 -> 30.2 s (encode time x0.69; the rest of the gap exceeds the encodes saved: shared-core noise).

Usage: python bench/compare_encodes.py [--samples 2048] [--batch-size 64] [--held 0.25] [--baseline HEAD] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_rerun import make_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import json, sys, time
t = time.perf_counter()
from vlm_lab import compare as compare_module, generation
from vlm_lab.config import CompareConfig
real, encoded, encode_s = generation.encode_inputs, [], []


def counted(processor, samples):
    start = time.perf_counter()
    try:
        return real(processor, samples)
    finally:
        encoded.append(len(samples))
        encode_s.append(time.perf_counter() - start)


generation.encode_inputs = counted
compare_module.ENCODING_CACHE_BYTES = int(sys.argv[5])
result = compare_module.compare(CompareConfig(checkpoints=tuple(sys.argv[1].split(",")), data=sys.argv[2], batch_size=int(sys.argv[3]),
                                output_dir=sys.argv[4], use_cache=False), progress=False)
print(json.dumps({"s": time.perf_counter() - t, "cpu_s": time.process_time(), "encoded": sum(encoded), "encode_s": sum(encode_s),
                  "code": compare_module.__file__,
                  "outputs": [[o["output"] for o in r["outputs"].values()] for r in result.rows]}))
"""


def run(code: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    # run from the temp folder: from the project's root, ``python -c`` would import its vlm_lab whatever PYTHONPATH says
    out = subprocess.run([sys.executable, "-c", RUN, *args], check=True, env=env, cwd=code.parent, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--held", type=float, default=0.25, help="the share of the batches the encoding cache holds")
    parser.add_argument("--baseline", default="HEAD", help="git revision whose vlm_lab is the 'before'")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; the one with the least CPU time is kept")
    parser.add_argument("--data", type=Path, help="where the data set is made (and kept); default: a temp folder")
    parser.add_argument("--checkpoints", default="checkpoints/shapes/checkpoint-250,checkpoints/shapes/checkpoint-500,"
                                                   "checkpoints/shapes/checkpoint-1000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(args.samples, args.data or Path(tmp) / "data")
        old = Path(tmp) / "baseline"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline, "vlm_lab"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        batch_bytes = args.batch_size * (3 * 64 * 64 * 4 + 2 * 73 * 8)  # the shapes processor's pixels, ids and mask
        bound = int(args.held * args.samples / args.batch_size) * batch_bytes
        checkpoints = ",".join(str(ROOT / c) for c in args.checkpoints.split(","))
        common = [checkpoints, str(data.resolve()), str(args.batch_size)]
        best: dict[str, dict] = {}
        for i in range(args.repeat):
            for label, code in (("before", old), ("after", ROOT)):
                got = run(code, [*common, str(Path(tmp) / f"out-{label}-{i}"), str(bound)])
                print(f"  {label}: {got['s']:.1f} s ({got['cpu_s']:.1f} s CPU), {got['encoded']} samples encoded in {got['encode_s']:.1f} s "
                      f"({got['code']})", flush=True)
                if label not in best or got["cpu_s"] < best[label]["cpu_s"]:
                    best[label] = got
        before, after = best["before"], best["after"]
        print(f"{args.samples} samples, 3 checkpoints, batch size {args.batch_size}, the cache holding {args.held:.0%} of the batches:")
        for label, got in (("before", before), ("after", after)):
            print(f"  {label}: {got['s']:.1f} s, {got['cpu_s']:.1f} s CPU, {got['encoded']} samples encoded in {got['encode_s']:.1f} s")
        print(f"  after/before: time {after['s'] / before['s']:.3f}, CPU {after['cpu_s'] / before['cpu_s']:.3f}, samples encoded "
              f"{after['encoded'] / before['encoded']:.3f}, encode time {after['encode_s'] / before['encode_s']:.3f}; "
              f"outputs {'the same' if after['outputs'] == before['outputs'] else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
