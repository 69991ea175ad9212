"""Papermill for a sweep's ``--jobs`` threads: one notebook execution, safe beside others.

``papermill.execute_notebook`` is not thread-safe as it comes (papermill#473), in two ways:

- Its local file handler keeps a working directory in one attribute shared by the whole
  process, which each call sets and restores. Overlapping calls leave it at a folder an
  earlier call saw, and every read and write (each cell's autosave) then ``os.chdir``\\ s the
  whole process there and back. Another thread resolving a relative path in that moment
  lands in the wrong folder: a sweep run's outputs were written into an earlier sweep's
  folder, and a deleted folder fails the write. Sweep paths are absolute, so their
  reads and writes here need no ``chdir``: ``execute`` installs a handler that skips it for
  absolute paths (relative ones behave exactly as papermill's).
- jupyter_client picks TCP ports by binding and releasing them, so kernels started at once
  can be given the same port. Each kernel here gets unix sockets in a folder of its own.

The kernel process's own output (ipykernel's log, what code writes to file descriptors 1 and 2,
a kernel that cannot start) goes to a file of the run's (``kernel_log``), not the sweep's
stderr: there it landed in the cron log unattributed, interleaved across ``--jobs``. A kernel is
shut down without jupyter_client's SIGINT first, which made ipykernel log "ERROR | KeyboardInterrupt
caught in kernel." after some runs nobody interrupted (``LoggedKernelManager._async_interrupt_kernel``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlm_lab.signals import signals_after_block

# papermill's per-run parameter warnings: the sweep has already checked the parameters, and
# papermill's own parser misreads ``# help`` comments that contain ``=``. And nbclient's error for a
# kernel that never started: the run's FAILED line says it, with the kernel's own words (it was a
# second line per run in the log, naming only the kernel's uuid), and nbclient's for a kernel that died, likewise.
_REPORTED_NOISE = ("Passed unknown parameter", "Unable to parse line", "Error occurred while starting new kernel client",
                   "Kernel died while waiting for execute reply")  # the run's FAILED line says how it died


class _ReportedNoise:
    def filter(self, record: Any) -> bool:
        return not record.getMessage().startswith(_REPORTED_NOISE)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Drop papermill's messages that the sweep reports itself while it runs (see ``_REPORTED_NOISE``)."""
    import logging

    loggers = [logging.getLogger(name) for name in ("papermill", "papermill.translators")]
    noise = _ReportedNoise()
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


class RunTimedOut(Exception):
    """The run was still executing at its ``run_timeout``: its kernel was killed. ``args``: (limit, elapsed) in seconds."""


class _Deadline:
    """Kills the run's kernel (its whole process group) once ``seconds`` have passed since it was made.

    A timer thread, not a cell timeout: a run whose cells each end in time, or a kernel stuck between
    cells, is stopped too. Killed before the kernel started, the kernel is killed as soon as it starts."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started, self.passed = seconds, time.monotonic(), False
        self._kill: Any = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._pass)
        self._timer.daemon = True
        self._timer.start()

    def _pass(self) -> None:
        with self._lock:
            self.passed, kill = True, self._kill
        if kill is not None:
            kill()

    def watch(self, kill: Any) -> None:
        """``kill()`` at the deadline, or now if it has passed."""
        with self._lock:
            self._kill, passed = kill, self.passed
        if passed:
            kill()

    def cancel(self) -> float:
        """Stop the timer; returns the seconds since the run started."""
        self._timer.cancel()
        return time.monotonic() - self.started


def execute(
    notebook: Path, output: Path, *, kernel_log: Path | None = None, run_timeout: float = 0,
    kernel_env: dict[str, str] | None = None, **options: Any,
) -> None:
    """``papermill.execute_notebook(notebook, output, **options)``, on a kernel of its own and
    without changing the process's working directory. Both paths must be absolute.
    ``kernel_log``: where the kernel process's stdout and stderr go (appended; default: this
    process's). ``run_timeout``: seconds the whole execution may take (0: no limit); past it the
    kernel's process group is killed and ``RunTimedOut`` raised (the output notebook is written,
    as far as it got). ``kernel_env``: variables the kernel gets where its environment (this process's, the
    kernelspec's) does not set them (a sweep's thread counts, ``vlm_lab.kernel_threads``).

    No ``cwd=``: papermill's is a process-wide ``chdir`` too. The kernel starts in this
    process's working directory.
    """
    import papermill
    from traitlets.config import Config

    if not (notebook.is_absolute() and output.is_absolute()):
        raise ValueError(f"sweep notebooks are executed by absolute path, got {notebook} -> {output}")
    _install_handler()
    deadline = _Deadline(run_timeout) if run_timeout else None
    try:
        with kernel_transport() as transport:
            config = transport.pop("config", Config())
            if kernel_log is not None or deadline is not None or kernel_env:
                # A class per execution: the deadline and kernel_env are this run's, and traitlets config carries only settings.
                manager = type("LoggedKernelManager", (_kernel_manager_class(),),
                               {"deadline": deadline, "kernel_env": kernel_env})
                config.merge(Config({
                    "NotebookClient": {"kernel_manager_class": manager},
                    "LoggedKernelManager": {"output_path": str(kernel_log or "")},
                }))  # fmt: skip
            papermill.execute_notebook(str(notebook), str(output), **options, **transport, config=config)
    except Exception as e:
        if deadline is not None and deadline.passed:  # whatever nbclient made of the dead kernel
            raise RunTimedOut(run_timeout, deadline.cancel()) from e
        raise
    finally:
        if deadline is not None:
            deadline.cancel()


@functools.cache
def _kernel_manager_class() -> type:
    """jupyter_client's kernel manager, with the kernel's stdout and stderr appended to ``output_path``."""
    from jupyter_client import AsyncKernelManager
    from traitlets import Unicode

    class LoggedKernelManager(AsyncKernelManager):
        output_path = Unicode("", config=True, help="file the kernel's stdout and stderr are appended to")
        deadline: Any = None  # a _Deadline: the subclass ``execute`` makes for a run with a run_timeout sets it
        kernel_env: Any = None  # execute's kernel_env: set where the kernel's environment leaves them unset
        _process: Any = None  # the kernel's Popen
        _shutting_down: bool = False
        _timed_out: bool = False  # killed at the run's deadline
        _launching: bool = False  # in Popen, in a worker thread: kill_kernels waits for its process id
        _writing: bool = False  # writing its connection file, in a worker thread: kill_kernels waits for it

        async def _async_pre_start_kernel(self, **kw: Any) -> Any:
            # Where the connection file is written (mkstemp, then its name kept): not to be cut in two.
            with _STARTING:  # kill_kernels either finds it here, or it finds kill_kernels begun and writes nothing
                if _KILLING.is_set():
                    raise RuntimeError("not started: the process is stopping and has killed its kernels")
                _LIVE.add(self)  # from before its connection file exists: kill_kernels finds it, until cleanup_resources
                self._writing = True
            try:
                with signals_after_block():
                    return await super()._async_pre_start_kernel(**kw)
            finally:
                self._writing = False

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            # jupyter_client's documented override point; Popen dups the descriptor, so it closes here.
            # A Ctrl-C or SIGTERM inside Popen lost the kernel's process id, and the kernel ran on; it stops it after.
            with signals_after_block(), contextlib.ExitStack() as stack:
                if self.output_path:
                    out = stack.enter_context(open(self.output_path, "ab"))
                    kw.update(stdout=out, stderr=out)
                kw["env"] = {**(self.kernel_env or {}), **kw.get("env", os.environ)}  # the user's values win
                self._launching = True
                try:
                    await super()._async_launch_kernel(kernel_cmd, **kw)
                finally:
                    self._process, self._launching = getattr(self.provisioner, "process", None), False
            if _KILLING.is_set():  # launched while kill_kernels ran (a worker thread's run): it goes too
                self.kill_now()
            if self.deadline is not None and self._process is not None:
                self.deadline.watch(self._kill_at_deadline)

        def kill_now(self) -> None:
            """SIGKILL the kernel's process group now, started or starting, and wait for it (no last words:
            a kernel still starting printed a ZMQError traceback once its socket folder was gone)."""
            process = self._process or getattr(self.provisioner, "process", None)
            if process is None or process.poll() is not None:
                return
            _kill_group(process)
            with contextlib.suppress(Exception):  # subprocess.TimeoutExpired: it is dying; nothing more to do
                process.wait(timeout=5)

        def _kill_at_deadline(self) -> None:
            """SIGKILL the kernel's process group (jupyter_client starts it in a session of its own): the kernel
            and what it started; nbclient then finds the kernel dead and papermill writes the notebook."""
            process = self._process
            if process is None or process.poll() is not None:
                return
            self._timed_out = True
            _kill_group(process)
            if self.output_path:
                with open(self.output_path, "a", encoding="utf-8") as out:
                    out.write(f"vlm-lab: run_timeout ({describe_duration(self.deadline.seconds)}) passed: the sweep "
                              "killed the kernel and the processes it started\n")

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            self._shutting_down = True  # ended by nbclient (done, a timeout): not news
            await super().shutdown_kernel(now=now, restart=restart)

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client's shutdown_kernel sends SIGINT before its shutdown_request, now=True too.
            # Papermill shuts down as soon as it has the reply to its last request (a kernel_info, after
            # the last cell), and a SIGINT landing before ipykernel leaves that request's handler made it
            # log "ERROR | KeyboardInterrupt caught in kernel." for a completed run (1 notebook-02 run in 9).
            # Without it an idle kernel ends at the request; a busy one (a cell past execution_timeout) is
            # ended by jupyter_client's SIGTERM, shutdown_wait_time / 2 (2.5 s) later. nbclient's own
            # interrupt (interrupt_kernel, bound to jupyter_client's function) does not come here.
            if not self._shutting_down:
                await super()._async_interrupt_kernel()

        async def cleanup_resources(self, restart: bool = False) -> None:
            # nbclient cleans up without a shutdown when the kernel is already dead: say how it ended
            # ("Kernel died" alone reads the same for the out-of-memory killer, a segfault and os._exit).
            code = self._process.poll() if self._process is not None and not self._shutting_down else None
            # Killed at the deadline: _kill_at_deadline said so (not "killed by SIGKILL (most often the OOM killer)").
            if code is not None and self.output_path and not self._timed_out:
                with open(self.output_path, "a", encoding="utf-8") as out:
                    out.write(f"{KERNEL_ENDED}{kernel_end(code)}\n")
            await super().cleanup_resources(restart=restart)
            if not restart:
                _LIVE.discard(self)

    return LoggedKernelManager


def _kill_group(process: Any) -> None:
    """SIGKILL the kernel's process group (jupyter_client starts it in a session of its own): it and what it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.name == "posix" and os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()


# Kernel managers whose kernel was launched and not yet cleaned up (nbclient's cleanup, after the run), for
# kill_kernels. nbclient starts the kernel and waits for its first reply outside its own clean-up: a Ctrl-C or
# SIGTERM in that window left the kernel running and its connection file in $TMPDIR (nbclient's setup_kernel).
_LIVE: weakref.WeakSet = weakref.WeakSet()
_KILLING = threading.Event()  # set by kill_kernels() for everything: kernels launched after it go at once
_STARTING = threading.RLock()  # registering a kernel in _LIVE vs kill_kernels() setting _KILLING (re-entrant: a handler)


def kill_kernels(folder: Path | None = None) -> None:
    """SIGKILL the kernels this process launched and did not clean up, and remove their connection files:
    those in ``folder`` (a run's socket folder, on its way out), or every one (``None``: a process about to
    ``os._exit``, whose threads' kernels would otherwise outlive it, each in a session of its own)."""
    with _STARTING:  # a worker thread's kernel registered after this writes no connection file
        if folder is None:
            _KILLING.set()
        managers = list(_LIVE)
    for manager in managers:
        if folder is None or Path(manager.ip).parent == folder:  # its sockets' folder/k-N
            waited = time.monotonic()
            # a worker's connection file being written, or its Popen about to return the pid: wait, then clean
            while (manager._writing or manager._launching) and time.monotonic() - waited < 5:
                time.sleep(0.01)
            manager.kill_now()
            manager.cleanup_connection_file()
            _LIVE.discard(manager)


def describe_duration(seconds: float) -> str:
    """``90 -> '1m30s'``, ``1800 -> '30m'``, ``5400 -> '1h30m'``: as a sweep file writes a ``run_timeout``."""
    whole = round(seconds)
    parts = [(whole // 86400, "d"), (whole % 86400 // 3600, "h"), (whole % 3600 // 60, "m"), (whole % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


KERNEL_ENDED = "vlm-lab: the kernel process "  # the line kernel.log ends with when the kernel died on its own


def kernel_end(code: int) -> str:
    """How a kernel process that died by itself ended, from its exit status (negative: the signal)."""
    from vlm_lab.signals import signal_name

    if code >= 0:
        return f"exited with status {code}"
    return "was killed by " + signal_name(-code, if_sigkill="most often the out-of-memory killer: `dmesg -T | grep -i oom`; "
                                          "fewer runs at once (the sweep's jobs) or a smaller batch needs less memory")


@functools.cache
def _install_handler() -> None:
    """Swap papermill's local file handler for one that does not ``chdir`` for absolute paths."""
    from papermill.iorw import LocalHandler, papermill_io

    class AbsolutePathsHandler(LocalHandler):
        def read(self, path: str) -> str:
            if not os.path.isabs(path):  # also papermill's "a notebook passed as a JSON string"
                return super().read(path)
            with open(path, encoding="utf-8") as f:
                return f.read()

        def listdir(self, path: str) -> list[str]:
            if not os.path.isabs(path):
                return super().listdir(path)
            return [os.path.join(path, name) for name in os.listdir(path)]

        def write(self, buf: str, path: str) -> None:
            if not os.path.isabs(path):
                return super().write(buf, path)
            if not os.path.isdir(os.path.dirname(path)):
                raise FileNotFoundError(f"output folder {os.path.dirname(path)} doesn't exist.")
            with open(path, "w", encoding="utf-8") as f:
                f.write(buf)

    handlers = getattr(papermill_io, "_handlers", [])  # (scheme, handler) pairs
    for i, (scheme, handler) in enumerate(handlers):
        if scheme == "local" and type(handler) is LocalHandler:
            handlers[i] = (scheme, AbsolutePathsHandler())


@contextlib.contextmanager
def kernel_transport() -> Iterator[dict[str, Any]]:
    """Papermill options that start the kernel on unix sockets of its own, in a folder removed after.

    jupyter_client's default ipc prefix is one fixed name ("kernel-ipc" in the working
    directory), so each kernel gets its own folder (``sweep_kernel_dirs.kernel_dir``: in the temp
    folder, short, as a unix socket path is limited to ~107 bytes). This also spares cron logs
    ipykernel's "running over TCP without encryption" warning. Other systems: TCP, as papermill does.
    The kernel manager is the sweep's, without jupyter_client's SIGINT at shutdown, so a completed
    notebook run by ``scripts/run_notebook.py`` (make demo) does not print ipykernel's "ERROR |
    KeyboardInterrupt caught in kernel." either; ``execute`` puts a logging subclass in its place.
    """
    if os.name != "posix":
        yield {}
        return
    from traitlets.config import Config

    from vlm_lab.sweep_kernel_dirs import kernel_dir

    # Removed after a dead kernel too; one a killed sweep leaves, the next sweep removes (remove_leftovers).
    # The connection file stays jupyter_client's tmp*.json in $TMPDIR: in this folder, a kernel still starting
    # when its sweep was killed outright (SIGKILL) made the folder again, for its file, after remove_leftovers.
    with kernel_dir() as folder:
        try:
            yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "k")},
                                     "NotebookClient": {"kernel_manager_class": _kernel_manager_class()}})}
        finally:
            kill_kernels(folder)  # one stopped while it started (nbclient cleans up only after), before its folder goes


def last_started_cell(notebook: Path) -> dict[str, Any]:
    """``cell_index`` and ``exec_count`` of the last code cell papermill started, or {}.

    A cell whose kernel died has no execution count: it gets the one it would have had.
    """
    import nbformat

    try:
        cells = nbformat.read(notebook, as_version=4).cells
    except (OSError, ValueError):  # no notebook written (the kernel never started), or unreadable
        return {}
    started = [
        i for i, c in enumerate(cells) if c.cell_type == "code" and c.metadata.get("papermill", {}).get("start_time")
    ]
    if not started:
        return {}
    counts = [c.get("execution_count") or 0 for c in cells[: started[-1]] if c.cell_type == "code"]
    return {"cell_index": started[-1], "exec_count": cells[started[-1]].get("execution_count") or max(counts, default=0) + 1}
