"""Ctrl-C the instant the runs are handed to the worker threads: the running run is still waited for."""

from __future__ import annotations

import concurrent.futures
import signal
import threading

import pytest

from test_sweep import sweep_file  # noqa: F401 - the fixture
from vlm_lab import sweep


class _CtrlCOnceTheFirstRunStarts(concurrent.futures.ThreadPoolExecutor):
    """A pool that delivers a real SIGINT to the sweep right after its first run was handed over and has started:
    the moment between ``pool.submit`` returning and the sweep noting the run."""

    def submit(self, fn, /, *args, **kwargs):
        started = threading.Event()

        def run(*a, **kw):
            started.set()
            return fn(*a, **kw)

        future = super().submit(run, *args, **kwargs)
        if not getattr(self, "_signalled", False):
            self._signalled = True
            started.wait()
            signal.raise_signal(signal.SIGINT)  # the handler runs at once, here: before submit returns
        return future


def test_ctrl_c_while_the_runs_are_being_handed_over_waits_for_the_running_one(sweep_file, monkeypatch, capsys):  # noqa: F811
    """Seen under load: a Ctrl-C between a run's hand-over and its bookkeeping made the sweep say 'stopping: 0 queued
    run(s) cancelled, waiting for the 0 running' and leave (exit 130) while that run went on executing, abandoned."""
    path = sweep_file({"x": [1, 2]})
    runs = sweep.plan(sweep.load_sweep(path))
    monkeypatch.setattr(sweep.concurrent.futures, "ThreadPoolExecutor", _CtrlCOnceTheFirstRunStarts)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(sweep.load_sweep(path), progress=False)
    assert "waiting for the 1 running to finish" in capsys.readouterr().err
    assert [r.state() for r in runs] == ["completed", "pending"]  # the started run finished; the other never started
