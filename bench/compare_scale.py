"""The comparison's files and views at the size of a real evaluation set (VQAv2 val: 214k questions), no model needed.

A synthetic 2-checkpoint ComparisonResult of N samples (10% disagreements, a meta key with N/4 values) is saved,
loaded, tabled and broken down. Prints each step's time, the saved comparison.html's size against results.jsonl's,
and, with Chromium (``/usr/bin/chromium``, Python playwright), how long the page takes to open and to redraw after
"show only these". Compare the capped page (``results_html.PAGE_ROWS``) with ``--all-rows`` (every sample).
Measured on 2 shared CPU cores, 20k samples of the shapes checkpoints: the whole page was 5.2 MB and took
2.5 s to open, 2.8 s to redraw unfiltered; capped at 5000: 1.5 MB, 1.5 s, 0.8 s.

Usage: python bench/compare_scale.py [--samples 20000 100000] [--all-rows] [--no-browser]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from vlm_lab.results import ComparisonResult


def synthetic(n: int, out: Path) -> ComparisonResult:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a = "red" if rng.random() < 0.85 else "blue"
        b = a if rng.random() < 0.9 else ("red" if a == "blue" else "blue")
        rows.append({"id": f"s{i:06d}", "image": f"images/{i % 500:024x}.png", "prompt": "What colour is the shape?", "reference": "red",
                     "meta": {"question_type": ("color", "shape", "describe")[i % 3], "question_id": i // 4},
                     "outputs": {name: {"output": o, "score": float(o == "red"), "latency_s": 0.06, "new_tokens": 2, "batch_size": 64}
                                 for name, o in (("a", a), ("b", b))}})  # fmt: skip
    refs = [{"name": name, "spec": name, "step": step} for name, step in (("a", 500), ("b", 1000))]
    summary = []
    from vlm_lab.scoring import bootstrap_accuracy

    for name in ("a", "b"):
        acc = bootstrap_accuracy([r["outputs"][name]["score"] for r in rows])
        summary.append({"checkpoint": name, "step": None, "accuracy": acc.value, "ci_low": acc.ci_low, "ci_high": acc.ci_high,
                        "n_scored": n, "n_samples": n, "mean_latency_s": 0.06, "tokens_per_s": 2600.0, "peak_memory_bytes": None,
                        "memory_kind": None})  # fmt: skip
    result = ComparisonResult(config={"data": "synthetic", "seed": 0}, checkpoints=["a", "b"], refs=refs, rows=rows, summary=summary,
                              output_dir=out)  # fmt: skip
    result.add_paired_columns()
    return result


def timed(label: str, fn):
    start = time.perf_counter()
    value = fn()
    print(f"  {label:<38} {time.perf_counter() - start:7.2f} s")
    return value


def browse(path: Path) -> None:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page()
        timed("Chromium: open comparison.html", lambda: page.goto(path.as_uri(), wait_until="load", timeout=600_000))
        timed("Chromium: show only disagreements", lambda: (page.check("input.only-disagree"), page.evaluate("document.body.offsetHeight")))
        timed("Chromium: show all again", lambda: (page.uncheck("input.only-disagree"), page.evaluate("document.body.offsetHeight")))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[20000])
    parser.add_argument("--all-rows", action="store_true", help="save the page with every sample (as before PAGE_ROWS)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    for n in args.samples:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            print(f"{n} samples, 2 checkpoints:")
            result = timed("build (pairs: paired bootstrap)", lambda: synthetic(n, out))
            if args.all_rows:
                result.page = lambda: ComparisonResult.page(result, all_rows=True)
            timed("save (jsonl, csv, html, summary)", result.save)
            loaded = timed("ComparisonResult.load", lambda: ComparisonResult.load(out))
            timed("to_dataframe", loaded.to_dataframe)
            timed("accuracy_by question_type (3 values)", lambda: loaded.accuracy_by("question_type"))
            timed(f"accuracy_by question_id ({n // 4} values)", lambda: loaded.accuracy_by("question_id"))
            timed("notebook view (_repr_html_, 50 rows)", loaded._repr_html_)
            html, jsonl = (out / "comparison.html").stat().st_size, (out / "results.jsonl").stat().st_size
            print(f"  comparison.html {html / 1e6:.1f} MB = {html / jsonl:.2f} x results.jsonl ({jsonl / 1e6:.1f} MB)")
            if not args.no_browser:
                browse(out / "comparison.html")


if __name__ == "__main__":
    main()
