"""Load on the Space: requests/s and p50/p95 latency, batched vs unbatched endpoint, in one run.

What it measures. It starts the real space/app.py on a loopback port (tiny shapes checkpoints,
on this machine's CPU, with the serving plan the app picks for it), then for each scenario and
each client count (default 1, 8 and 32) runs that many concurrent gradio_client clients, first
against

- ``/compare``: the form's endpoint, one generate call per request (unbatched; up to the
  plan's ``generate_limit`` at once), then against
- ``/compare_batch``: the batched API (gradio ``batch=True``): Gradio hands the app the calls
  waiting in the queue, up to ``max_batch_size``, and the app answers them in one generate call.

Every client asks the same single-checkpoint, greedy question about the same image (uploaded
with every call, as a real client does) in a closed loop: its next call starts when the answer
to the previous one arrives. After one warm-up call per client, all start together; requests/s
is the calls answered within the next ``--seconds`` divided by that window (calls still in flight
at its end are waited for and not counted); p50/p95 are over the answered calls.

Scenarios: **long answers** first, the case the target is about (checkpoint-0 is untrained and
generates until it reaches ``--long-tokens`` = 64 or the end of what it reads, ~55 tokens, named in
the scenario; real VLM answers run to dozens of tokens),
then **short answers** (checkpoint-1000 answers in ~2 tokens, so Gradio's own work per request,
the same for both endpoints, is most of the cost and batching saves less; ``--no-short`` skips it).

Also printed per run: CPU milliseconds per answered call spent by the server process and by the
client processes (they share the machine's cores), and the mean size of the batches the server
ran in the window. Target: batched >= 2x the unbatched requests/s at 8 or more clients. Asserts
nothing.

Clients are threads, ``--per-process`` to a process. gradio_client by default builds a new
certificate-verifying SSL context (reading certifi's CA bundle) for each of the ~3 HTTP requests
of a call, even to an http:// URL: ~60 ms of CPU per call, which on a 2-core machine takes the
cores from the server being measured. So each client process builds one verifying context and
passes it to its clients (``ssl_verify=context``: the same checks, 5-20 ms of CPU per call
measured here); ``--default-ssl`` measures with gradio_client's default instead.
"""

from __future__ import annotations

import argparse
import datetime
import os
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
ENDPOINTS = ("/compare", "/compare_batch")


def call(client, endpoint: str, image, checkpoint: str, tokens: int) -> None:
    if endpoint == "/compare":
        client.predict(image, PROMPT, checkpoint, "(none)", "(none)", "greedy", tokens, api_name="/compare")
    else:
        client.predict(image, PROMPT, checkpoint, tokens, api_name="/compare_batch")


def _client_process(url, endpoint, threads, seconds, checkpoint, tokens, default_ssl, barrier, results) -> None:
    """``threads`` gradio_client clients in one process; reports (latencies, errors, CPU seconds) on ``results``."""
    import ssl

    import certifi
    from gradio_client import Client, handle_file

    verify = True if default_ssl else ssl.create_default_context(cafile=certifi.where())
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    warmed = threading.Barrier(threads + 1)
    window: list[float] = []  # [deadline], set by the main thread before the workers start timing

    def worker() -> None:
        client = Client(url, verbose=False, analytics_enabled=False, ssl_verify=verify)
        image = handle_file(str(IMAGE))
        call(client, endpoint, image, checkpoint, tokens)  # warm: session, connection, upload path
        warmed.wait()
        warmed.wait()  # released together with every other process
        deadline = window[0]
        while (start := time.monotonic()) < deadline:
            try:
                call(client, endpoint, image, checkpoint, tokens)
            except Exception as e:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            end = time.monotonic()
            if end <= deadline:  # a call that ends after the window is not counted
                with lock:
                    latencies.append(end - start)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    warmed.wait()
    barrier.wait()  # every process warmed up: the window starts
    window.append(time.monotonic() + seconds)
    cpu = time.process_time()
    warmed.wait()
    time.sleep(max(0.0, window[0] - time.monotonic()))
    cpu = time.process_time() - cpu
    for t in workers:
        t.join()
    results.put((latencies, errors, cpu))


def run_load(url: str, endpoint: str, clients: int, seconds: float, checkpoint: str, tokens: int, *,
             server_pid: int, per_process: int, default_ssl: bool) -> dict:
    """``clients`` concurrent clients in processes of ``per_process`` threads, for ``seconds``."""
    import multiprocessing as mp

    import psutil

    ctx = mp.get_context("spawn")
    sizes = [min(per_process, clients - i) for i in range(0, clients, per_process)]
    barrier = ctx.Barrier(len(sizes) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_client_process,
                         args=(url, endpoint, n, seconds, checkpoint, tokens, default_ssl, barrier, results))
             for n in sizes]
    for p in procs:
        p.start()
    server = psutil.Process(server_pid)
    barrier.wait()
    wall_start, cpu = time.time(), server.cpu_times()
    time.sleep(seconds)
    after = server.cpu_times()
    server_cpu = after.user + after.system - cpu.user - cpu.system
    latencies: list[float] = []
    errors: list[str] = []
    client_cpu = 0.0
    for _ in procs:
        lat, err, c = results.get()
        latencies += lat
        errors += err
        client_cpu += c
    for p in procs:
        p.join()
    latencies.sort()
    n = len(latencies)
    p95 = latencies[min(n - 1, int(0.95 * n))] if n else float("nan")
    return {
        "endpoint": endpoint, "clients": clients, "ok": n, "errors": len(errors), "rps": n / seconds,
        "p50_ms": 1000 * statistics.median(latencies) if n else float("nan"), "p95_ms": 1000 * p95,
        "server_cpu_ms": 1000 * server_cpu / max(n, 1), "client_cpu_ms": 1000 * client_cpu / max(n, 1),
        "window": (wall_start, wall_start + seconds), "first_error": errors[0] if errors else "",
    }


def answer_room(checkpoint: Path, asked: int) -> int:
    """The new tokens a question gets from ``checkpoint``: ``asked``, or fewer where the image and prompt
    leave less of what the checkpoint reads (the app stops every answer there)."""
    from vlm_lab.data import Sample, open_image
    from vlm_lab.generation import context_room, encode_inputs
    from vlm_lab.models import load_model

    loaded = load_model(checkpoint, device="cpu")
    fit = context_room(loaded.model.config, encode_inputs(loaded.processor, [Sample("q", open_image(IMAGE), PROMPT)]))
    return asked if fit is None else min(asked, fit[1][0])


def batch_sizes(log_text: str, window: tuple[float, float]) -> list[int]:
    """Sizes of the batches the server started within ``window`` (wall-clock seconds), from its log."""
    sizes = []
    for stamp, size in re.findall(r"^(\S+ \S+) INFO vlm_lab\.space: batch start \((\d+) request", log_text, re.M):
        t = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if window[0] <= t <= window[1]:
            sizes.append(int(size))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints" / "shapes"))
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per run (default 8)")
    parser.add_argument("--long-tokens", type=int, default=64)
    parser.add_argument("--per-process", type=int, default=8, help="client threads per process (default 8)")
    parser.add_argument("--default-ssl", action="store_true",
                        help="gradio_client's default: a new SSL context per HTTP request (~60 ms CPU per call)")
    parser.add_argument("--short", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the short-answer scenario (default: yes)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    long_tokens = answer_room(Path(args.checkpoints) / "checkpoint-0", args.long_tokens)
    scenarios = {f"long ({long_tokens} tokens)": ("checkpoint-0", args.long_tokens)}
    if args.short:
        scenarios["short (~2 tokens)"] = ("checkpoint-1000", 8)
    env = {"VLM_LAB_CHECKPOINTS": args.checkpoints, "VLM_LAB_QUEUE_SIZE": "128"}
    print(f"{os.cpu_count()} cores; load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"clients: gradio_client, {args.per_process} threads a process, "
          f"{'default SSL (a context per request)' if args.default_ssl else 'one SSL context a process'}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_space(env, workdir=Path(tmp)) as (url, log):
        import psutil

        server_pid = next(p.pid for p in psutil.Process().children() if any("app.py" in a for a in p.cmdline()))
        plan = re.search(r"serving: (.*)", log.read_text())
        print(f"server plan: {plan.group(1) if plan else '?'}", flush=True)
        for scenario, (checkpoint, tokens) in scenarios.items():
            for clients in levels:
                for endpoint in ENDPOINTS:
                    r = run_load(url, endpoint, clients, args.seconds, checkpoint, tokens, server_pid=server_pid,
                                 per_process=args.per_process, default_ssl=args.default_ssl)
                    time.sleep(0.5)  # the log line of the last batch is written
                    sizes = batch_sizes(log.read_text(), r["window"]) if endpoint == "/compare_batch" else []
                    r.update(scenario=scenario, batch=statistics.mean(sizes) if sizes else float("nan"))
                    rows.append(r)
                    print(f"{scenario:18s} {endpoint:15s} clients={clients:3d} ok={r['ok']:4d} errors={r['errors']:3d} "
                          f"{r['rps']:6.1f} req/s  p50 {r['p50_ms']:6.0f} ms  p95 {r['p95_ms']:6.0f} ms  "
                          f"cpu/call server {r['server_cpu_ms']:4.0f} ms clients {r['client_cpu_ms']:3.0f} ms"
                          + (f"  mean batch {r['batch']:.1f}" if sizes else ""), flush=True)
                    if r["errors"]:
                        print(f"    first error: {r['first_error']}")
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| answers | clients | unbatched req/s | batched req/s | batched/unbatched | p50/p95 ms unbatched | "
          "p50/p95 ms batched | mean batch | server CPU ms/call u / b | client CPU ms/call u / b |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scenario in scenarios:
        for clients in levels:
            u, b = _pair(rows, scenario, clients)
            print(f"| {scenario} | {clients} | {u['rps']:.1f} | {b['rps']:.1f} | {_ratio(u, b):.2f}x | "
                  f"{u['p50_ms']:.0f} / {u['p95_ms']:.0f} | {b['p50_ms']:.0f} / {b['p95_ms']:.0f} | {b['batch']:.1f} | "
                  f"{u['server_cpu_ms']:.0f} / {b['server_cpu_ms']:.0f} | {u['client_cpu_ms']:.0f} / {b['client_cpu_ms']:.0f} |")
    first = next(iter(scenarios))
    ratios = [f"{c} clients {_ratio(*_pair(rows, first, c)):.2f}x" for c in levels if c >= 8]
    if ratios:
        print(f"\nbatched/unbatched, {first} answers: {', '.join(ratios)} (target: >= 2x at 8+ clients)")


def _pair(rows: list[dict], scenario: str, clients: int) -> tuple[dict, dict]:
    """The unbatched and the batched run of one scenario and client count."""
    by_endpoint = {r["endpoint"]: r for r in rows if r["clients"] == clients and r["scenario"] == scenario}
    return by_endpoint["/compare"], by_endpoint["/compare_batch"]


def _ratio(unbatched: dict, batched: dict) -> float:
    return batched["rps"] / unbatched["rps"] if unbatched["rps"] else float("inf")


if __name__ == "__main__":
    main()
