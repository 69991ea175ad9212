"""The explorer's Compare in the background: a click returns at once, Stop ends the run at the next
safe point, one run at a time, errors shown and raised by wait(). Real checkpoints, real generation.

No timing: each test holds the run's thread at a known point (a widget observer runs in the thread
that set the value) and releases it when the kernel's side has done its part.
"""

from __future__ import annotations

import html
import signal
import threading

import pytest

from vlm_lab.widgets import explore

HOLD_S = 120  # only so a broken run fails the test instead of hanging it; never reached when it works


@pytest.fixture
def fresh_cache():
    from vlm_lab.model_cache import ModelCache

    return ModelCache()


def _hold_after(explorer, done: int) -> tuple[threading.Event, threading.Event]:
    """(reached, release): the run's thread stops once ``done`` checkpoints have answered, until ``release`` is set.

    It holds on the progress bar, which the run sets outside the output's lock: the kernel's thread
    can still write the output meanwhile (an upload's notice).
    """
    reached, release = threading.Event(), threading.Event()

    def hold(change) -> None:
        if change["new"] == done and not reached.is_set():
            reached.set()
            assert release.wait(HOLD_S), "the test never released the run"

    explorer.progress.observe(hold, names="value")
    return reached, release


def _watched_explorer(ref: str, cache) -> tuple:
    """An explorer on ``ref`` alone and the list of every status it shows (unescaped), as they are shown."""
    e = explore([ref], "shapes:val:2", device="cpu", cache=cache)
    e.checkpoints.value = (0,)
    shown: list[str] = []
    e.output.observe(lambda c: shown.append(html.unescape(c["new"])), names="value")
    return e, shown


def test_a_click_returns_while_the_run_goes_and_stop_keeps_what_finished(tiny_checkpoints, fresh_cache):
    """A Compare blocked the kernel until it ended; the only way out was interrupting the kernel."""
    e = explore([str(p) for p in tiny_checkpoints[:3]], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0, 1, 2)
    assert e.stop_button.disabled and not e.running  # nothing to stop
    reached, release = _hold_after(e, 1)
    e.button.click()  # returns: the kernel is free for other cells (and for the Stop click)
    assert reached.wait(HOLD_S)
    assert e.running and e.button.disabled and not e.stop_button.disabled
    assert e.progress.layout.display != "none" and (e.progress.value, e.progress.max) == (1, 3)
    e.button.click()  # a second click (a double click's) while it runs: dropped, not queued
    e.stop_button.click()
    assert e.stop_button.disabled and e.stop_button.description == "Stopping…"
    release.set()
    rows = e.wait()
    assert [r["checkpoint"] for r in rows] == ["checkpoint-0"] and rows[0]["new_tokens"] >= 1
    note = "Stopped: 1 of 3 checkpoints finished; not run: checkpoint-250, checkpoint-500."
    assert e.history[0].note == note and len(e.history) == 1
    out = html.unescape(e.output.value)
    assert f'vlm-lab-warn" style="padding:4px 0">{note}' in out and out.count("<tr class='vlm-lab-row") == 1
    assert not e.running and not e.button.disabled and e.stop_button.disabled and e.stop_button.description == "Stop"
    assert e.progress.layout.display == "none"
    assert [r["checkpoint"] for r in e.run()] == ["checkpoint-0", "checkpoint-250", "checkpoint-500"]  # and it runs again


def test_stop_cuts_a_long_answer_at_the_next_token(tiny_checkpoints, fresh_cache):
    """A real VLM's long answer takes minutes on CPU: Stop must not wait for its end."""
    e = explore([str(tiny_checkpoints[0])], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0,)
    e.max_new_tokens.value = 200  # checkpoint-0 never ends an answer: it runs to the context (~55 tokens)
    (full,) = e.run()
    assert full["new_tokens"] > 10
    forwards = []

    def count(_module, _args, _out) -> None:  # the model's forward pass: one per token
        forwards.append(1)
        if len(forwards) == 3:
            e.stop()

    handle = e.cache.get(e.refs[0], device="cpu").model.register_forward_hook(count)
    try:
        assert e.run() == []
    finally:
        handle.remove()
    assert len(forwards) == 3  # the 4th token was never computed
    assert e.history[0].note == "Stopped: 0 of 1 checkpoints finished; checkpoint-0 was stopped while answering."


def test_an_interrupt_while_waiting_stops_the_run_and_propagates(tiny_checkpoints, fresh_cache):
    """The kernel's interrupt (or Ctrl-C in a script) during run(): the run stops, what finished stays."""
    e = explore([str(p) for p in tiny_checkpoints[:3]], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0, 1, 2)
    asked = threading.Event()
    e.stop_button.observe(lambda c: asked.set() if c["new"] == "Stopping…" else None, names="description")

    def interrupt(change) -> None:
        if "Running checkpoint-250" in html.unescape(change["new"]) and not asked.is_set():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # to the thread in run()
            assert asked.wait(HOLD_S)  # the interrupt reached wait(), which asked the run to stop

    e.output.observe(interrupt, names="value")
    with pytest.raises(KeyboardInterrupt):
        e.run()
    assert not e.running and [r["checkpoint"] for r in e.rows] == ["checkpoint-0"]
    assert e.history[0].note.startswith("Stopped: 1 of 3 checkpoints finished; checkpoint-250 was stopped")


def test_one_run_at_a_time_across_explorers(tiny_checkpoints, fresh_cache):
    """Two explorers in one kernel share the model cache and torch: the second waits, and can be stopped while it does."""
    first = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=fresh_cache)
    second = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=fresh_cache)
    reached, release = _hold_after(first, 1)  # its answer is in, and it holds the turn
    first.button.click()
    assert reached.wait(HOLD_S)
    waiting = threading.Event()
    second.output.observe(lambda c: "Waiting for another explorer's Compare" in html.unescape(c["new"]) and waiting.set(), names="value")
    second.button.click()
    assert waiting.wait(HOLD_S) and second.running
    second.stop()
    assert second.wait() == [] and second.history[0].note.startswith("Stopped before it started")
    second.button.click()  # again: it waits for the first, then answers
    release.set()
    assert [r["text"] for r in first.wait()] == [r["text"] for r in second.wait()] and second.rows[0]["text"]


def test_an_error_outside_the_rows_is_shown_and_raised_by_wait(tiny_checkpoints, fresh_cache):
    """An exception in the run's thread (here a user's observer on the progress bar) was lost with the thread."""
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0,)

    def broken(change) -> None:
        if change["new"] == 1:
            raise ValueError("the user's observer broke")

    e.progress.observe(broken, names="value")
    e.button.click()
    with pytest.raises(ValueError, match="the user's observer broke"):
        e.wait()
    out = html.unescape(e.output.value)
    assert "Compare failed: ValueError: the user's observer broke (explorer.wait() raises it with its traceback)." in out
    assert 'vlm-lab-error" style' in out and not e.button.disabled and e.stop_button.disabled
    e.wait()  # raised once
    e.progress.unobserve(broken, names="value")
    assert e.run()[0]["text"]


def test_inputs_changed_during_a_run_are_for_the_next_run(tiny_checkpoints, fresh_cache, tmp_path):
    import random

    from vlm_lab import shapes

    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0,)
    e.prompt.value = "What color is the shape?"
    reached, release = _hold_after(e, 1)  # answered, not yet finished
    e.button.click()
    assert reached.wait(HOLD_S)
    e.prompt.value = "What shape is it?"
    e.prompt._handle_custom_msg({"event": "submit"}, [])  # Enter while it runs: said, not queued
    shapes.draw_shape("blue", "circle", random.Random(3)).save(tmp_path / "blue.png")
    e.path.value = str(tmp_path / "blue.png")
    out = html.unescape(e.output.value)
    assert "Using image" in out and "Running checkpoint-1000 (1/1)" in out  # the notice does not wipe the progress
    assert "press Enter again when it ends" not in out  # the newer notice replaced it
    release.set()
    (row,) = e.wait()
    assert row["text"] == e.samples[0].reference and len(e.history) == 1  # the example's colour, asked before the changes
    assert e.run()[0]["text"] == "circle"  # the next run takes the uploaded blue circle and the new prompt


def test_enter_while_a_stopped_run_ends_says_it_is_stopping_not_to_stop_it(tiny_checkpoints, fresh_cache):
    """Stop, then Enter in the prompt for the next run while the stopped one ends: it said 'or Stop it first'."""
    e = explore([str(p) for p in tiny_checkpoints[:2]], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0, 1)
    reached, release = _hold_after(e, 1)
    e.button.click()
    assert reached.wait(HOLD_S)
    e.stop()
    e.prompt._handle_custom_msg({"event": "submit"}, [])
    out = html.unescape(e.output.value)
    assert "The Compare is stopping: press Enter again once it has ended." in out and "Stop it first" not in out
    assert e.start() is False and "The Compare is stopping: start the next one once it has ended." in html.unescape(e.output.value)
    release.set()
    assert [r["checkpoint"] for r in e.wait()] == ["checkpoint-0"]
    e.prompt._handle_custom_msg({"event": "submit"}, [])  # and now it runs
    assert [r["checkpoint"] for r in e.wait()] == ["checkpoint-0", "checkpoint-250"]

def test_stop_during_a_load_says_it_waits_for_the_load_and_nothing_is_logged(tiny_checkpoints, tmp_path, monkeypatch):
    """A large checkpoint loads for a minute and from_pretrained cannot be cut short: Stop said nothing meanwhile."""
    from vlm_lab.model_cache import ModelCache
    from vlm_lab.models import load_model

    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    reached, release = threading.Event(), threading.Event()

    def held_load(ref, **options):  # a real load, held where a large checkpoint spends its time
        reached.set()
        assert release.wait(HOLD_S)
        return load_model(ref, **options)

    e = explore([str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=ModelCache(loader=held_load))
    e.checkpoints.value, e.log.value = (0, 1), True
    e.button.click()
    assert reached.wait(HOLD_S)
    assert "Loading checkpoint-0 (1/2)…" in html.unescape(e.output.value)
    e.stop()
    assert "Stopping once checkpoint-0 has loaded: a load cannot be cut short." in html.unescape(e.output.value)
    release.set()
    assert e.wait() == []
    assert e.history[0].note == "Stopped: 0 of 2 checkpoints finished; checkpoint-0 was stopped after loading; not run: checkpoint-1000."
    out = html.unescape(e.output.value)
    assert "Not logged to W&B: the run was stopped before every checkpoint answered." in out and "a load cannot" not in out
    assert not (tmp_path / "wandb_dir").exists()
    assert e.refs[0] in e.cache  # the load is kept for the next run


def test_a_run_whose_explorer_is_gone_can_be_stopped_from_code(tiny_checkpoints, fresh_cache):
    """The explorer cell run again mid-run: the new explorer waited for a run whose Stop button was gone."""
    from vlm_lab import widgets

    assert widgets.stop_running() is False  # none runs
    old = explore([str(p) for p in tiny_checkpoints[:2]], "shapes:val:2", device="cpu", cache=fresh_cache)
    old.checkpoints.value = (0, 1)
    reached, release = _hold_after(old, 1)
    old.button.click()
    assert reached.wait(HOLD_S)
    new = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=fresh_cache)  # the cell again
    waiting = threading.Event()
    new.output.observe(lambda c: "vlm_lab.widgets.stop_running() when its cell was run again" in html.unescape(c["new"])
                       and waiting.set(), names="value")  # fmt: skip
    new.button.click()
    assert waiting.wait(HOLD_S)
    assert widgets.stop_running() is True
    release.set()
    assert [r["checkpoint"] for r in old.wait()] == ["checkpoint-0"] and old.history[0].note.endswith("not run: checkpoint-250.")
    assert [r["checkpoint"] for r in new.wait()] == ["checkpoint-1000"] and not new.history[0].note  # the waiting one went on


@pytest.mark.timeout(180)  # before the fix the run waited until the cell let its model go: it hung here
def test_stop_ends_a_run_waiting_for_room_that_another_cells_model_holds(tiny_checkpoints):
    """Another cell holds checkpoint-250 in ``cache.use`` (a long compare over the shared cache) and the budget has
    room for one model: the explorer's load waits for that room, and Stop was not seen until the cell let go."""
    import torch
    from test_model_cache_threads import Run, until

    from vlm_lab.checkpoints import resolve
    from vlm_lab.model_cache import ModelCache, estimate_nbytes, format_bytes

    cell_ref = resolve(str(tiny_checkpoints[1]))[0]
    cache = ModelCache(budget_bytes=int(1.5 * estimate_nbytes(cell_ref, torch.float32)))
    inside, leave = threading.Event(), threading.Event()

    def cell() -> None:
        with cache.use(cell_ref, device="cpu"):
            inside.set()
            leave.wait()

    holding = Run(cell)
    assert inside.wait(HOLD_S)
    held = cache.used_bytes
    e, shown = _watched_explorer(str(tiny_checkpoints[-1]), cache)
    try:
        e.button.click()
        until(lambda: shown and "Waiting for room" in shown[-1])  # checkpoint-1000 waits for checkpoint-250's room
        # it said only 'Loading checkpoint-1000 (1/1)…' while it waited, and Stop said it would stop once loaded;
        # then it guessed from the cache's numbers whether it waited, and for what
        need = format_bytes(estimate_nbytes(resolve(str(tiny_checkpoints[-1]))[0], torch.float32))
        assert (f"Waiting for room for checkpoint-1000 (1/1): it needs {need} of the model cache's {format_bytes(cache.budget_bytes)} "
                f"budget, and the room is held by checkpoint-250 ({format_bytes(held)}) in use in thread {holding.name!r}; it "
                "loads once that room is free (Stop ends the wait).") in shown[-1]  # fmt: skip
        assert not any("Stopping" in out or "Loading" in out for out in shown)  # the Stop text only after Stop
        e.stop()
        assert e.wait() == []  # at once, the cell still holding its model
        said = [out for out in shown if "Stopping" in out]
        assert said and "Stopping: checkpoint-1000 stops waiting in the model cache now." in said[0]
        assert not any("Stopping once checkpoint-1000 has loaded" in out for out in shown)
        assert e.history[0].note == ("Stopped: 0 of 1 checkpoints finished; checkpoint-1000 was stopped while waiting "
                                     f"for {need} of room in the model cache (models in use: checkpoint-250).")
        assert cache.loaded == ["checkpoint-250"] and cache.used_bytes == held  # nothing of the run reserved or pinned
    finally:
        leave.set()
    holding.join()
    (row,) = e.run()  # and it runs again, once the room is free
    assert row["checkpoint"] == "checkpoint-1000" and row["text"] and cache.loaded == ["checkpoint-1000"]


@pytest.mark.timeout(180)  # before the fix the status never said what the load waited for: it hung here
def test_stop_ends_a_run_whose_load_waits_for_another_threads_model_build(tiny_checkpoints):
    """A notebook cell loads checkpoint-250 (held inside from_pretrained) while the explorer's run loads checkpoint-1000:
    models are built one at a time, and the status said 'Loading checkpoint-1000' while Stop waited for both loads."""
    from test_model_cache_build_waits import HeldInFromPretrained
    from test_model_cache_threads import Run, until

    from vlm_lab.model_cache import ModelCache

    cache = ModelCache(budget_bytes="1GB")
    cache.loader = held = HeldInFromPretrained("checkpoint-250")
    cell = Run(lambda: cache.get(str(tiny_checkpoints[1]), device="cpu"))
    assert held.inside.wait(HOLD_S)
    e, shown = _watched_explorer(str(tiny_checkpoints[-1]), cache)
    try:
        e.button.click()
        until(lambda: shown and "Waiting to load" in shown[-1])
        assert (f"Waiting to load checkpoint-1000 (1/1): thread {cell.name!r} is loading checkpoint-250, and models load "
                "one at a time (Stop ends the wait).") in shown[-1]
        e.stop()
        assert e.wait() == []  # at once, checkpoint-250 still loading
        said = [out for out in shown if "Stopping" in out]
        assert said and "Stopping: checkpoint-1000 stops waiting in the model cache now." in said[0]
        assert e.history[0].note == ("Stopped: 0 of 1 checkpoints finished; checkpoint-1000 was stopped while waiting "
                                     f"for checkpoint-250's load in thread {cell.name!r} in the model cache (models in use: none).")
    finally:
        held.release.set()
    cell.join()
    assert held.loading == ["checkpoint-250"] and cache.loaded == ["checkpoint-250"]  # checkpoint-1000 never built
