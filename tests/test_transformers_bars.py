"""transformers' bars quieted per thread: its tqdm hook is one process-wide global, and loads run in several threads."""

import threading

from transformers.utils import logging as hf_logging

from vlm_lab.transformers_bars import no_transformers_bars


def shown() -> bool:
    """Whether a bar transformers makes in this thread now is shown."""
    bar = hf_logging.tqdm(total=1, file=open("/dev/null", "w"))
    try:
        return not bar.disable
    finally:
        bar.close()


def in_thread(steps):
    """Run ``steps`` (callables) in a thread, each after the test says go: (go, done) events per step."""
    gates = [(threading.Event(), threading.Event()) for _ in steps]
    out = []

    def work():
        for (go, done), step in zip(gates, steps):
            go.wait(10)
            out.append(step())
            done.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def advance(i):
        gates[i][0].set()
        assert gates[i][1].wait(10)

    return thread, advance, out


def test_two_threads_leaving_in_the_other_order_leave_bars_on():
    assert shown()
    inner = no_transformers_bars()
    a, advance, _ = in_thread([inner.__enter__, lambda: inner.__exit__(None, None, None)])
    outer = no_transformers_bars()
    advance(0)  # A quiet
    outer.__enter__()  # this thread quiet too
    advance(1)  # A leaves first
    outer.__exit__(None, None, None)
    a.join(10)
    assert shown(), "bars stayed off for the rest of the process"
    assert hf_logging.set_tqdm_hook(None) is None  # no hook left in place


def test_a_quiet_thread_does_not_quiet_another_threads_bars():
    quiet = no_transformers_bars()
    a, advance, out = in_thread([quiet.__enter__, shown, lambda: quiet.__exit__(None, None, None)])
    advance(0)
    assert shown()  # this thread's bar (a large download beside a small load) is shown
    advance(1)
    assert out[-1] is False  # A's own is quiet
    advance(2)
    a.join(10)


def test_a_hook_in_place_before_is_called_and_put_back():
    seen = []

    def mine(factory, args, kwargs):
        seen.append(kwargs.get("disable"))
        return factory(*args, **kwargs)

    hf_logging.set_tqdm_hook(mine)
    try:
        with no_transformers_bars(), no_transformers_bars():  # nested in one thread
            assert not shown()
        assert shown() and seen == [True, None]
    finally:
        assert hf_logging.set_tqdm_hook(None) is mine
