"""Start the real ``space/app.py`` in a subprocess on a free loopback port, wait, stop.

Used by the Space tests and by bench/space_load.py. The app runs exactly as ``make space``
runs it, with the environment it would get on the Space (Space variables as env vars).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "space" / "app.py"
READY = "vlm_lab.space: ready"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_space(
    env: Mapping[str, str],
    *,
    workdir: Path,
    app: Path = APP,
    drop_env: tuple[str, ...] = (),
    timeout: float = 150,
) -> Iterator[tuple[str, Path]]:
    """Yield ``(url, log_path)`` once the app answers HTTP and has logged that it is ready; always stop it afterwards.

    ``workdir`` is the app's working directory (Gradio writes its caches there) and holds
    ``space.log``, the app's stdout and stderr. ``app`` defaults to the repo's space/app.py
    (a published copy elsewhere runs the same way); inherited variables whose names start
    with one of ``drop_env`` are left out.
    """
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "space.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not (drop_env and k.startswith(drop_env))},
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_EXAMPLES_CACHE": str(workdir / "examples-cache"),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **env,
    }
    full_env.pop("WANDB_API_KEY", None)
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(app)], env=full_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{app} exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:  # answering HTTP, and done with its start (examples cached): the app logs "ready"
                with urllib.request.urlopen(url + "/gradio_api/info", timeout=2) as r:
                    if r.status == 200 and READY in log_path.read_text():
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{app} did not answer within {timeout}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.3)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
