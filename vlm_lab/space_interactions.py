"""The Space's optional W&B log of interactions (on only when ``WANDB_API_KEY`` is set).

Moved out of ``space_service`` (which re-exports ``InteractionLog``). wandb is imported only when
the first interaction is logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from vlm_lab.config import GenerationConfig

if TYPE_CHECKING:
    from vlm_lab.space_service import Answer

log = logging.getLogger("vlm_lab.space")


# -- W&B log of interactions -----------------------------------------------------------------


class InteractionLog:
    """W&B logging of Space interactions, on only when ``WANDB_API_KEY`` is set (a Space secret).

    One run for the life of the app, started lazily; logging happens on a background
    thread so a slow or failing W&B never delays or breaks an answer. At most ``max_pending``
    interactions (each holds its image) wait for that thread: while W&B is slow or down, those
    beyond are dropped and counted, not queued without bound (the Space's memory would grow with
    its traffic), with a warning at most every ``warn_every_s`` and the count at ``close``.
    """

    MAX_PENDING = 64
    WARN_EVERY_S = 300.0

    def __init__(self, environ: Mapping[str, str] | None = None, *, config: Mapping[str, Any] | None = None,
                 max_pending: int = MAX_PENDING, warn_every_s: float = WARN_EVERY_S) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("WANDB_API_KEY", "").strip())
        self.config = dict(config or {})
        self.max_pending, self.warn_every_s = max_pending, warn_every_s
        self.dropped = 0  # interactions not logged because max_pending were waiting
        self._run: Any = None
        self._pool: Any = None
        self._lock = threading.Lock()  # Gradio calls log() from several worker threads
        self._pending = 0  # submitted, not yet logged (the one being logged included)
        self._unsaid = 0  # dropped since the last warning
        self._warned_at: float | None = None

    def log(self, image: Any, prompt: str, answers: Sequence[Answer], config: GenerationConfig) -> None:
        """Queue one interaction for the W&B run; returns at once (dropped, counted, when ``max_pending`` wait)."""
        if not self.enabled:
            return
        with self._lock:
            if self._pending >= self.max_pending:
                self._drop()
                return
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb-log")
            self._pending += 1
            self._pool.submit(self._log_one, image, prompt, list(answers), config)

    def close(self) -> None:
        """Wait for pending logs (at most ``max_pending``) and finish the run (at app exit)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._run is not None:
            from vlm_lab import tracking

            tracking.finish_run(self._run)  # waits until wandb-core has written the run log
            self._run = None
        if self.dropped:
            log.warning("W&B interaction log: %d interaction(s) were not logged: W&B was too slow to keep up "
                        "(at most %d wait to be logged)", self.dropped, self.max_pending)

    def _drop(self) -> None:
        """Count one interaction not logged; warn on the first, then at most every ``warn_every_s`` (under the lock)."""
        self.dropped += 1
        self._unsaid += 1
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= self.warn_every_s:
            log.warning("W&B is slow or unreachable: %d interaction(s) not logged since the last warning (%d in all); "
                        "at most %d wait to be logged, so the Space's memory stays bounded; answers are not affected",
                        self._unsaid, self.dropped, self.max_pending)
            self._warned_at, self._unsaid = now, 0

    def _log_one(self, image: Any, prompt: str, answers: list[Answer], config: GenerationConfig) -> None:
        try:
            self._log(image, prompt, answers, config)
        except Exception as e:  # noqa: BLE001 - logging never breaks the Space; said, not lost in a future
            log.warning("W&B: an interaction could not be logged (%s: %s)", type(e).__name__, e)
        finally:
            with self._lock:
                self._pending -= 1

    def _log(self, image: Any, prompt: str, answers: list[Answer], config: GenerationConfig) -> None:
        from vlm_lab import tracking

        if not self.enabled:  # the run could not start: the interactions queued meanwhile are not tried again
            return
        if self._run is None:
            try:
                self._run = tracking.start_run({**self.config, **config.to_dict()}, job_type="space", tags=("space",))
            except Exception as e:  # noqa: BLE001 - logging never breaks the Space
                log.warning("W&B logging off: %s", e)
                self.enabled = False
                return
        tracking.log_interaction(
            image=image, prompt=prompt, run=self._run,
            outputs={a.checkpoint: a.text for a in answers},
            latency_s={a.checkpoint: a.latency_s for a in answers},
            memory_mb={a.checkpoint: a.memory_mb for a in answers},
        )
