"""ModelCache under interrupts: a KeyboardInterrupt (Ctrl-C, or what a signal handler raises) between two lines of
the cache leaves nothing taken: no model in use, no room held, no wait recorded for a thread that no longer waits.

Real tiny checkpoints and real threads. The interrupt is delivered with ``sys.settrace`` as a chosen function
returns in this thread (``interrupted_on_return``), where CPython can deliver a pending Ctrl-C (after a call);
threads are ordered by Events, hooks and the cache's counters, never by sleeping.
"""

from __future__ import annotations

import contextlib
import dis
import gc
import inspect
import itertools
import threading

import pytest
import torch
from model_cache_refs import refs  # noqa: F401 - a fixture
from test_model_cache_reuse import assert_in_use_here, assert_out_of_use
from test_model_cache_threads import Gate, Run, hold_in_use, until
from test_model_cache_waits import interrupted_on_return, tracing

from vlm_lab.model_cache import ModelCache, estimate_nbytes

pytestmark = pytest.mark.timeout(180)  # a wait that never ends fails here instead of hanging the run


@pytest.fixture(scope="module")
def unit(refs):
    """The bytes one tiny model is charged (the three are the same size)."""
    return estimate_nbytes(refs[0], torch.float32)


@contextlib.contextmanager
def interrupted_after_call(context, method: str, calls: int, landed: list):
    """A KeyboardInterrupt delivered in ``context.method`` (this thread) once its ``calls``-th call has returned
    (0: as it begins), where CPython can deliver a pending Ctrl-C; ``landed`` gets True when it was delivered."""
    code = getattr(type(context), method).__code__

    def trace(frame, event, arg):
        if event == "call" and frame.f_code is code and frame.f_locals.get("self") is context and not landed:
            frame.f_trace_opcodes = True
            returned = [0]

            def each_opcode(frame, event, arg):
                if event == "opcode" and not landed:
                    if returned[0] == calls:
                        landed.append(True)
                        raise KeyboardInterrupt
                    returned[0] += dis.opname[frame.f_code.co_code[frame.f_lasti]] == "CALL"
                return each_opcode
            return each_opcode
        return None

    with tracing(trace):
        yield


@contextlib.contextmanager
def interrupted_after(function, line: str):
    """A KeyboardInterrupt delivered in this thread just after ``function`` ran its source line ``line``."""
    source, first = inspect.getsourcelines(function)
    (after,) = [first + i for i, text in enumerate(source) if text.strip() == line]

    def trace(frame, event, arg):
        if event == "call" and frame.f_code is function.__code__:
            def next_line(frame, event, arg):
                if event == "line" and frame.f_lineno != after and ran[0] == after:
                    raise KeyboardInterrupt
                ran[0] = frame.f_lineno
                return next_line
            ran = [None]
            return next_line
        return None

    with tracing(trace):
        yield


@pytest.mark.parametrize("block_is", ["loaded", "a hit", "entered again"])
@pytest.mark.parametrize("method", ["__enter__", "__exit__"])
def test_an_interrupt_after_any_call_as_a_use_block_starts_or_ends_leaves_nothing_in_use(refs, unit, method, block_is):
    """Whichever call of the block's ``__enter__``/``__exit__`` the interrupt comes after (each is tried in turn, until
    one runs to its end), the model is out of use: at once as the block starts, its traceback kept (Jupyter keeps the
    last) or not; as it ends, once the block is dropped (nothing can let go before: the traceback holds the block).
    The outer block of a block entered again keeps its model in use until it is left. With ``@contextmanager`` an
    interrupt just after its ``next()`` returned kept the model in use for as long as the traceback was kept: a load
    needing its room raised 'held by models in use (checkpoint-0 by this thread)' in this thread, or waited in another."""
    cache = ModelCache(budget_bytes=int(1.5 * unit))
    for calls in itertools.count():
        if block_is == "a hit":
            cache.get(refs[0], device="cpu")
        block, landed, kept = cache.use(refs[0], device="cpu"), [], []
        with block if block_is == "entered again" else contextlib.nullcontext():
            try:
                with interrupted_after_call(block, method, calls, landed), block:
                    pass
            except KeyboardInterrupt as interrupt:
                kept.append(interrupt)  # as a notebook keeps its last error, and with it the block
            if block_is == "entered again":
                assert_in_use_here(cache, refs)
        if method == "__enter__":
            assert_out_of_use(cache, refs)
        del block, kept
        gc.collect()
        assert_out_of_use(cache, refs)
        if not landed:  # past its last call
            break
    assert calls >= 2  # the interrupt landed, as it began and after a call at least (the tracer works)


def test_an_interrupt_as_a_get_starts_waiting_for_another_threads_load_leaves_no_wait_behind(refs, unit):
    """The interrupt lands as this thread starts waiting for a worker's load (as the wait is checked). Its wait
    stayed recorded: later, while this thread only had a block open, the worker, in a block of its own, needed that
    block's room and raised at once ('checkpoint-0 by another thread that waits for this one'), where it should wait
    for this thread to leave its block."""
    cache = ModelCache(budget_bytes=int(2.5 * unit))
    gate = Gate(cache, hold=(refs[1].name,))
    inside, ask = threading.Event(), threading.Event()

    def worker():  # the explorer's background run: a block open on checkpoint-250, then asks for checkpoint-500
        with cache.use(refs[1], device="cpu"):
            inside.set()
            ask.wait()
            return cache.get(refs[2], device="cpu").ref.name

    cache.get(refs[0], device="cpu")
    running = Run(worker)
    gate.started[refs[1].name].wait()
    with pytest.raises(KeyboardInterrupt), interrupted_on_return(ModelCache._never_go_on):
        cache.get(refs[1], device="cpu")  # waits for the worker's load: interrupted as it starts to
    gate.go(refs[1].name)
    inside.wait()
    with cache.use(refs[0], device="cpu"):  # a hit: this thread runs, with checkpoint-0 in use
        ask.set()
        until(lambda: cache.stats["waits"] == 1 or not running.is_alive())  # it waits for this block's room
        assert running.error is None, running.error
    running.join()
    assert running.error is None and running.value == "checkpoint-500"
    assert sorted(cache.loaded) == ["checkpoint-250", "checkpoint-500"]


def test_an_interrupt_as_a_wait_for_room_tells_its_hook_leaves_the_cache_consistent(refs, unit):
    """The interrupt lands as the cache lets go of its lock to call ``on_wait``: it is the caller's, as raised (it
    came back as 'RuntimeError: cannot notify on un-acquired lock'), and the cache holds and reserves nothing."""
    cache = ModelCache(budget_bytes=int(1.5 * unit))
    using, leave = hold_in_use(cache, refs[0])
    held = cache.used_bytes

    def on_wait(wait):  # (a wait the interrupt missed ends here, not in a hang)
        raise AssertionError(f"the hook ran: the interrupt did not come before it ({wait})")

    with pytest.raises(KeyboardInterrupt), interrupted_after(ModelCache._tell, "self._lock.release()"):
        cache.get(refs[1], device="cpu", on_wait=on_wait)
    assert cache.used_bytes == held and cache.loaded == ["checkpoint-0"]
    leave.set()
    using.join()
    assert cache.get(refs[1], device="cpu").ref.name == "checkpoint-250"


def test_an_interrupt_as_a_get_begins_its_load_leaves_no_load_in_flight(refs, unit):
    """The interrupt lands after the get took the load on (so that another get of the model waits for it) and
    before the load began (as it freed the stale copy's memory). The load stayed 'in flight' for ever: the next get
    in this thread raised 'is being loaded by another thread ...' (itself), and one in another thread would have waited
    for ever."""
    cache = ModelCache(budget_bytes=int(1.5 * unit))
    with pytest.raises(KeyboardInterrupt), interrupted_on_return(ModelCache._free):
        cache.get(refs[0], device="cpu")
    assert cache.loaded == [] and cache.used_bytes == 0
    assert cache.get(refs[0], device="cpu").ref.name == "checkpoint-0" and cache.stats["loads"] == 1
    cache.clear()
    other = Run(lambda: cache.get(refs[0], device="cpu").ref.name)
    other.join()
    assert other.error is None and other.value == "checkpoint-0" and cache.stats["loads"] == 2


def blocked_taking_the_lock_back(thread: threading.Thread) -> bool:
    """Whether ``thread`` sleeps (in the kernel) on ``_tell``'s line that takes the cache's lock back: twice in a row,
    a while apart, so that a thread only waiting for the GIL there (a moment) is not taken for one waiting for the lock."""
    import sys

    lines, _ = inspect.getsourcelines(ModelCache._tell)
    code = ModelCache._tell.__code__

    def once() -> bool:
        frame = sys._current_frames().get(thread.ident)
        with open(f"/proc/self/task/{thread.native_id}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return (frame is not None and frame.f_code is code and state == "S"
                and "_lock" in lines[frame.f_lineno - code.co_firstlineno] and "release" not in lines[frame.f_lineno - code.co_firstlineno])

    return once() and not threading.Event().wait(0.05) and once()


def test_a_ctrl_c_while_a_wait_takes_the_lock_back_from_another_thread_leaves_the_cache_consistent(refs, unit):
    """A real SIGINT while ``on_wait``'s caller waits to take the cache's lock back from another thread: a lock's
    ``acquire()`` is cut short by Ctrl-C, so the lock was not taken back, and leaving the cache's ``with`` raised
    'RuntimeError: cannot notify on un-acquired lock' in place of the KeyboardInterrupt (a window (4) left)."""
    import signal
    import socket

    cache = ModelCache(budget_bytes=int(1.5 * unit))
    using, leave = hold_in_use(cache, refs[0])
    held = cache.used_bytes
    main, taken, holders = threading.current_thread(), threading.Event(), []
    delivered, wakeup = socket.socketpair()  # the signal's C handler writes to it as the signal lands, whatever Python does
    wakeup.setblocking(False)

    def holder():  # holds the cache's lock as the hook returns, until the Ctrl-C has landed in the main thread
        with cache._lock:
            taken.set()
            until(lambda: blocked_taking_the_lock_back(main))
            signal.pthread_kill(main.ident, signal.SIGINT)
            delivered.recv(1)  # its acquire() has been interrupted (or, taken back as Condition.wait does, goes on waiting)

    def on_wait(wait):
        if not holders:  # once
            holders.append(Run(holder))
            taken.wait()

    def ctrl_c(signum, frame):
        raise KeyboardInterrupt

    previous, previous_fd = signal.signal(signal.SIGINT, ctrl_c), signal.set_wakeup_fd(wakeup.fileno())
    try:
        with pytest.raises(KeyboardInterrupt):
            cache.get(refs[1], device="cpu", on_wait=on_wait)
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous)
        delivered.close()
        wakeup.close()
    holders[0].join()
    assert holders[0].error is None, holders[0].error
    assert cache.used_bytes == held and cache.loaded == ["checkpoint-0"] and not cache._waiting and not cache._queue
    leave.set()
    using.join()
    assert cache.get(refs[1], device="cpu").ref.name == "checkpoint-250"  # the lock is free: another thread took it
    other = Run(lambda: cache.get(refs[2], device="cpu").ref.name)
    other.join()
    assert other.error is None and other.value == "checkpoint-500"
