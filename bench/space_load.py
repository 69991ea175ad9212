"""Load on the Space: requests/s and p50/p95 latency, batched vs unbatched endpoint.

Starts the real space/app.py on a free loopback port (tiny shapes checkpoints), then for
1, 8 and 32 concurrent gradio_client clients sends the same single-checkpoint question to

- ``/compare``: the form's endpoint, one request per call (unbatched);
- ``/compare_batch``: the batched API, which Gradio groups into batches;

twice: short answers (checkpoint-1000 stops after ~2 tokens, so Gradio's per-request overhead
dominates) and long answers (checkpoint-0, untrained, always generates ``--long-tokens``, as
real VLM answers of a few dozen tokens do). Prints a table and the batched/unbatched
throughput ratio (target: >= 2x at 8+ clients); asserts nothing. Clients are threads in
process groups (4 clients per process) on the same machine as the server.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the app runner the tests use

from space_server import running_space  # noqa: E402

IMAGE = ROOT / "space" / "examples" / "red-circle.png"
PROMPT = "What color is the shape?"


def call(client, endpoint: str, image, checkpoint: str, tokens: int) -> None:
    if endpoint == "/compare":
        client.predict(image, PROMPT, checkpoint, "(none)", "(none)", "greedy", tokens, api_name="/compare")
    else:
        client.predict(image, PROMPT, checkpoint, tokens, api_name="/compare_batch")


def _client_process(url, endpoint, threads, requests_each, checkpoint, tokens, barrier, results) -> None:
    """``threads`` gradio_client clients in one process; reports (latencies, errors) on ``results``."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    warmed = threading.Barrier(threads + 1)

    def worker() -> None:
        client = Client(url, verbose=False, analytics_enabled=False)
        image = handle_file(str(IMAGE))
        call(client, endpoint, image, checkpoint, tokens)  # warm: session, connection, upload path
        warmed.wait()
        warmed.wait()  # released together with every other process
        for _ in range(requests_each):
            start = time.perf_counter()
            try:
                call(client, endpoint, image, checkpoint, tokens)
            except Exception as e:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    warmed.wait()
    barrier.wait()  # every process warmed up: the clock starts
    warmed.wait()
    for t in workers:
        t.join()
    results.put((latencies, errors))


def run_load(url: str, endpoint: str, clients: int, requests_each: int, checkpoint: str, tokens: int,
             *, per_process: int = 4) -> dict:
    """``clients`` concurrent clients, spread over processes of ``per_process`` threads.

    One process cannot stand in for many users: gradio_client spends ~60 ms of CPU per call
    under the GIL, which would cap every endpoint at the same ~15 req/s.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    sizes = [min(per_process, clients - i) for i in range(0, clients, per_process)]
    barrier = ctx.Barrier(len(sizes) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(url, endpoint, n, requests_each, checkpoint, tokens, barrier, results))
             for n in sizes]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in procs:
        lat, err = results.get()
        latencies += lat
        errors += err
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else float("nan")
    return {
        "endpoint": endpoint, "clients": clients, "ok": len(latencies), "errors": len(errors),
        "rps": len(latencies) / wall, "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": 1000 * p95, "first_error": errors[0] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "shapes"))
    parser.add_argument("--requests", type=int, default=0, help="requests per client (default: 48 per run, at least 3 each)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--long-tokens", type=int, default=64)
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    scenarios = {"short answers": ("checkpoint-1000", 8), f"long answers ({args.long_tokens} tokens)": ("checkpoint-0", args.long_tokens)}
    env = {"VLM_LAB_CHECKPOINTS": args.checkpoints, "VLM_LAB_QUEUE_SIZE": "128"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_space(env, workdir=Path(tmp)) as (url, log):
        for scenario, (checkpoint, tokens) in scenarios.items():
            for clients in levels:
                each = args.requests or max(3, 48 // clients)
                for endpoint in ("/compare", "/compare_batch"):
                    r = run_load(url, endpoint, clients, each, checkpoint, tokens)
                    rows.append({**r, "scenario": scenario})
                    print(f"{scenario:24s} {endpoint:15s} clients={clients:3d} ok={r['ok']:4d} errors={r['errors']:3d} "
                          f"{r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms", flush=True)
                    if r["errors"]:
                        print(f"    first error: {r['first_error']}")
        text = log.read_text()
        sizes = [int(s) for s in re.findall(r"batch start \((\d+) request", text)]
        compare_s = [float(s) for s in re.findall(r"compare done in ([\d.]+)s", text)]
        batch_s = [float(s) for s in re.findall(r"batch done in ([\d.]+)s", text)]
    print()
    print("| answers | clients | unbatched req/s | batched req/s | batched/unbatched | unbatched p50/p95 ms | batched p50/p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for scenario in scenarios:
        for clients in levels:
            u, b = [r for r in rows if r["clients"] == clients and r["scenario"] == scenario]
            print(f"| {scenario} | {clients} | {u['rps']:.1f} | {b['rps']:.1f} | {b['rps'] / u['rps']:.2f}x | "
                  f"{u['p50_ms']:.0f} / {u['p95_ms']:.0f} | {b['p50_ms']:.0f} / {b['p95_ms']:.0f} |")
    if sizes and compare_s:
        print(f"\nbatches the server ran: {len(sizes)}, mean size {statistics.mean(sizes):.1f}, max {max(sizes)}")
        print(f"server time in the event function per request: unbatched {1000 * statistics.mean(compare_s):.0f} ms, "
              f"batched {1000 * sum(batch_s) / sum(sizes):.0f} ms (all runs)")


if __name__ == "__main__":
    main()
