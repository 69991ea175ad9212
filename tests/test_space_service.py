"""vlm_lab.space_service in process: the memory plan, the comparison service, the W&B interaction log."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from test_checkpoint_refs import add_snapshot, hf_cache, point_ref  # noqa: F401 - hf_cache is a fixture
from vlm_lab import space_service as ss
from vlm_lab.errors import CheckpointNotFoundError, ConfigError, VlmLabError
from vlm_lab.space_settings import NONE_CHOICE, SpaceSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "space" / "examples"


@pytest.fixture(scope="module")
def service(tiny_dir):
    return ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu"))


def test_memory_plan_from_the_verdicts(service):
    plan = service.memory
    assert plan.target == "cpu-basic" and len(plan.notes) == len(service.labels) + 2  # + the longest question's tokens
    assert plan.notes[-2].startswith("rows counted for questions of up to 500 characters: up to ")
    assert plan.notes[-1].startswith("generating: ") and plan.slots is not None  # every generation at once
    assert 1 <= plan.max_batch_size <= 64 and plan.co_resident >= len(service.labels)
    assert 0 < plan.cache_budget_bytes < 16 * 10**9
    assert service.cache.budget_bytes == plan.cache_budget_bytes
    unknown = ss.plan_memory([service.refs["checkpoint-0"], "nobody/nothing"], device="cpu")
    assert any("nobody/nothing: no estimate" in n for n in unknown.notes) and unknown.max_batch_size is not None


def test_a_dtype_the_device_refuses_stops_the_service_not_each_checkpoint(tiny_dir):
    from vlm_lab.errors import DeviceError

    with pytest.raises(DeviceError, match="VLM_LAB_DTYPE='fp16': unknown dtype 'fp16'; use auto, float32, float16"):
        ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu", dtype="fp16"))


def test_a_device_the_machine_lacks_names_the_space_variable_its_owner_set(tiny_dir):
    """The library's words are a Python caller's (device='cpu'); a Space's owner set VLM_LAB_DEVICE."""
    import torch

    from vlm_lab.errors import DeviceError
    from vlm_lab.space_settings import plan_serving

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    said = "VLM_LAB_DEVICE=cuda but CUDA is not available here; use VLM_LAB_DEVICE=cpu (or VLM_LAB_DEVICE=auto)"
    settings = SpaceSettings(checkpoints=(str(tiny_dir),), device="cuda")
    with pytest.raises(DeviceError) as caught:
        ss.ComparisonService(settings)
    assert str(caught.value) == said
    with pytest.raises(DeviceError) as caught:  # the serving plan reads the device too
        plan_serving(settings)
    assert str(caught.value) == said


def test_bfloat16_on_a_gpu_without_it_names_the_space_variable_its_owner_set():
    """No T4 here: the error resolve_dtype raises there, through the Space's wording."""
    from vlm_lab.models import no_native_bfloat16
    from vlm_lab.space_settings import variables_in_errors

    with pytest.raises(type(no_native_bfloat16("Tesla T4", "7.5"))) as caught:
        with variables_in_errors("VLM_LAB_DTYPE", "bfloat16"):
            raise no_native_bfloat16("Tesla T4", "7.5")
    assert str(caught.value) == ("bfloat16 on Tesla T4 (compute capability 7.5) has no native support and runs slowly; "
                                 "use VLM_LAB_DTYPE=float16 (or VLM_LAB_DTYPE=auto)")


def test_a_checkpoint_over_the_cache_budget_names_the_space_variables_its_owner_sets(tiny_dir):
    """The cache's words are a Python caller's (ModelCache(budget_bytes=...), dtype='float16'); a Space sizes its cache
    from VLM_LAB_CACHE_BUDGET (or the memory plan) and loads in VLM_LAB_DTYPE: it said --memory-budget too."""
    from vlm_lab.errors import MemoryBudgetError

    # 500 kB: the tiny model (673 kB in float32) does not fit, in float16 (337 kB) it would: both fixes are named
    small = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu", cache_budget="500kB"))
    with pytest.raises(MemoryBudgetError) as caught:
        small.compare(str(EXAMPLES / "green-triangle.png"), "What shape is it?", ["checkpoint-1000"], "greedy", 8)
    said = str(caught.value)
    assert said.startswith("checkpoint-1000 needs ") and said.endswith(
        "raise the budget (VLM_LAB_CACHE_BUDGET=1MB) or load in a smaller dtype (VLM_LAB_DTYPE=float16)"), said
    assert "--" not in said and "ModelCache" not in said and "dtype='" not in said


def test_choices_default_to_first_middle_last(service):
    assert service.labels == [f"checkpoint-{n}" for n in (0, 250, 500, 750, 1000)]
    assert service.default_selection() == ["checkpoint-0", "checkpoint-500", "checkpoint-1000"]


@pytest.mark.parametrize("strategy, tokens, message", [
    ("beam(0)", 8, "beam needs a whole number"),
    ("greedy", 0, "max new tokens must be between 1 and 64"),
    ("greedy", 65, "max new tokens must be between 1 and 64"),
    ("greedy", "many", "max new tokens must be a whole number"),
    ("greedy", 3.7, "max new tokens must be a whole number between 1 and 64, got 3.7"),
    ("greedy", True, "max new tokens must be a whole number between 1 and 64, got True"),  # True == 1 to Python
    ("greedy", False, "max new tokens must be a whole number between 1 and 64, got False"),
    pytest.param("greedy", 10**400, "max new tokens must be a whole number", id="overflows-float"),
    ("beam(2000)", 8, r"'beam\(2000\)' asks for 2000 beams; this Space allows at most beam\(4\)"),
])
def test_generation_choices_are_validated(service, strategy, tokens, message):
    with pytest.raises(ConfigError, match=message):
        service.generation_config(strategy, tokens)


def test_the_question_limit_is_the_space_variable_the_memory_plan_counted_with(tiny_dir, tmp_path):
    """VLM_LAB_MAX_PROMPT_CHARS sets what a visitor may ask and what every row of the memory plan is counted with; a
    question at the limit is answered (the old message, 'keep it under 24', said 24 characters were refused)."""
    from vlm_lab.errors import DataError

    settings = SpaceSettings.from_env({"VLM_LAB_CHECKPOINTS": str(tiny_dir / "checkpoint-1000"), "VLM_LAB_DEVICE": "cpu",
                                       "VLM_LAB_MAX_PROMPT_CHARS": "24"}, app_dir=tmp_path)
    service = ss.ComparisonService(settings)
    assert service.memory.prompt_chars == 24
    assert "questions of up to 24 characters" in service.memory.prompt_note()
    image, question = str(EXAMPLES / "green-triangle.png"), "What shape is it? Please"
    assert len(question) == 24 and service.compare(image, question, ["checkpoint-1000"], "greedy", 4)[0].error == ""
    with pytest.raises(DataError) as caught:
        service.compare(image, question + "!", ["checkpoint-1000"], "greedy", 4)
    assert str(caught.value) == "the question is 25 characters; this Space takes at most 24: shorten it"


def test_a_checkpoint_without_its_tokenizer_at_start_counts_questions_once_it_is_loaded(tiny_dir, tmp_path):
    """A hub model on a Space's first start: the plan is made before it is downloaded (config only, questions counted at
    4 tokens a character), and a request's question could never be counted, so a short question got no more beams than
    the longest, even after the model had been loaded. Once loaded, its processor counts them (a copy: the shared one's
    tokenizer is never called unpadded)."""
    from transformers import AutoTokenizer

    from vlm_lab.generation import render_prompt

    folder = shutil.copytree(tiny_dir / "checkpoint-1000", tmp_path / "checkpoint-1000")
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).rename(aside / name)
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(folder),), device="cpu"))
    (label,), question = service.labels, "What shape is it?"
    ref = service.refs[label]
    assert service.memory.question_tokens(ref, question) is None
    assert "no tokenizer to count with: 4 per character assumed" in service.memory.prompt_how
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (aside / name).rename(folder / name)  # downloaded with the model
    (answer,) = service.compare(str(EXAMPLES / "green-triangle.png"), question, [label], "greedy", 4)
    assert answer.text == "triangle"
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert service.memory.question_tokens(ref, question) == len(tokenizer(render_prompt(tokenizer, question))["input_ids"])
    loaded = service.cache.get(ref, device="cpu")
    assert service.memory.counters[ref].tokenizer is not loaded.processor.tokenizer


def test_compare_runs_each_selected_checkpoint_once_in_order(service):
    image = str(EXAMPLES / "green-triangle.png")
    answers = service.compare(image, "What shape is it?", ["checkpoint-1000", "checkpoint-1000", NONE_CHOICE], "greedy", 8)
    assert [(a.checkpoint, a.text, a.memory_kind) for a in answers] == [("checkpoint-1000", "triangle", "weights")]
    with pytest.raises(ConfigError, match="compare at most 3"):
        service.compare(image, "What shape is it?", ["checkpoint-0", "checkpoint-250", "checkpoint-500", "checkpoint-750"])


def test_batch_answers_good_requests_and_flags_bad_ones(service, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no pixels here")
    green, purple = str(EXAMPLES / "green-triangle.png"), str(EXAMPLES / "purple-diamond.png")
    answers = service.answer_batch(
        [green, str(bad), purple, purple, green],
        ["What color is the shape?", "What color is the shape?", "Describe the image.", "", "What shape is it?"],
        ["checkpoint-1000", "checkpoint-1000", "checkpoint-1000", "checkpoint-1000", "checkpoint-0"],
        [8, None, 8, 8, 999],
    )
    # each answer is its own request's: what the checkpoint says to that request alone (the weights' words, not ours)
    (alone,) = service.compare(purple, "Describe the image.", ["checkpoint-1000"], "greedy", 8)
    assert answers[0].text == "green" and answers[2].text == alone.text and alone.text.startswith("a purple ")
    assert answers[0].error == answers[2].error == ""
    assert "not an image" in answers[1].error
    assert "no question" in answers[3].error
    assert "between 1 and 64" in answers[4].error


def test_generation_choices_within_bounds_pass(service):
    assert service.generation_config("beam(4)", "8").max_new_tokens == 8
    assert service.generation_config("nucleus (top-p 0.9)", 8.0).strategy == "nucleus(0.9)"


@pytest.fixture
def with_broken(tiny_checkpoints, tmp_path):
    """A service offering checkpoint-0, a copy of checkpoint-1000 whose weights were cut short, and checkpoint-1000."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints[-1], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as by an interrupted upload
    refs = (str(tiny_checkpoints[0]), str(broken), str(tiny_checkpoints[-1]))
    return ss.ComparisonService(SpaceSettings(checkpoints=refs, device="cpu"))


def test_startup_selection_leaves_out_what_cannot_load(with_broken, caplog):
    service = with_broken
    assert service.default_selection() == service.labels and len(service.labels) == 3
    assert service.startup_selection() == ["checkpoint-0", "checkpoint-1000"]
    assert "left out of the defaults and examples" in caplog.text and "not a valid safetensors file" in caplog.text
    assert len(service.cache) == 2  # the usable ones are loaded: the first visitor does not wait


def test_a_space_whose_checkpoints_all_fail_says_so_with_the_token_fix(hf_cache, tiny_checkpoints, tmp_path, caplog):
    """A private checkpoints repo and no HF_TOKEN secret: the Space ran, with one warning per checkpoint
    (that advised `hf auth login`), and every visitor got an error. One ERROR line now says what to do."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints[-1], broken)
    (broken / "model.safetensors").write_bytes(b"cut short")
    add_snapshot(hf_cache, "org/run", broken)
    unusable = ss.ComparisonService(SpaceSettings(checkpoints=("org/run",), device="cpu"))
    assert unusable.startup_selection() == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("none of the default checkpoints can be used")
    assert "private need a read-only token as the Space secret HF_TOKEN" in errors[0]


def test_a_prompt_holding_the_image_token_fails_alone_in_its_batch(service):
    image = str(EXAMPLES / "red-circle.png")
    good, bad, good_too = service.answer_batch([image] * 3, ["What color is the shape?", "<image>\nWhat color?",
                                                             "What shape is it?"], ["checkpoint-1000"] * 3)
    assert (good.text, good.error, good_too.text, good_too.error) == ("red", "", "circle", "")
    assert bad.text == "" and bad.error.startswith("the prompt holds the image token '<image>'")  # no engine sample id
    with pytest.raises(VlmLabError, match=r"^the prompt holds the image token"):
        service.compare(image, "<image> What color?", ["checkpoint-1000"])


def test_a_checkpoint_that_cannot_load_fails_only_its_own_column(with_broken):
    service = with_broken
    image = str(EXAMPLES / "red-circle.png")
    first, broken, last = service.compare(image, "What color is the shape?", service.labels, "greedy", 8)
    assert (last.checkpoint, last.text, last.error) == ("checkpoint-1000", "red", "")
    assert first.checkpoint == "checkpoint-0" and first.error == ""
    assert broken.text == "" and "not a valid safetensors file" in broken.error
    assert broken.stats_markdown().startswith("**could not answer:** ") and "safetensors" in broken.stats_markdown()
    with pytest.raises(CheckpointNotFoundError, match="not a valid safetensors file"):  # alone: no answer at all
        service.compare(image, "What color is the shape?", [service.labels[1]])


def test_an_answer_cut_off_at_the_token_limit_says_so(service):
    image = str(EXAMPLES / "purple-diamond.png")
    (cut,) = service.compare(image, "Describe the image.", ["checkpoint-1000"], "greedy", 2)
    (whole,) = service.compare(image, "Describe the image.", ["checkpoint-1000"], "greedy", 16)
    assert cut.truncated and "cut off at max new tokens" in cut.stats_markdown()
    assert whole.text.startswith(cut.text) and len(whole.text) > len(cut.text), (cut.text, whole.text)
    assert not whole.truncated and "cut off" not in whole.stats_markdown()


def test_a_checkpoint_that_cannot_load_fails_only_its_own_batched_requests(with_broken):
    service = with_broken
    image = str(EXAMPLES / "red-circle.png")
    good, bad, good_too = service.answer_batch([image] * 3, ["What color is the shape?"] * 3,
                                               ["checkpoint-1000", service.labels[1], "checkpoint-1000"])
    assert (good.text, good.error, good_too.text) == ("red", "", "red")
    assert bad.text == "" and "model.safetensors is not a valid safetensors file" in bad.error


def test_a_hub_checkpoint_whose_main_moves_is_served_at_its_new_commit(hf_cache, tiny_checkpoints):
    """A long-running Space notices `main` moving on the hub after VLM_LAB_HUB_REFRESH_S (here 0)."""
    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    trained = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[-1], ref=None)
    service = ss.ComparisonService(SpaceSettings(checkpoints=("org/shapes",), device="cpu", hub_refresh_s=0))
    image = str(EXAMPLES / "red-circle.png")
    (untrained,) = service.compare(image, "What color is the shape?", ["org/shapes"], "greedy", 8)
    point_ref(hf_cache, "org/shapes", "main", trained)  # someone pushed the trained weights to main
    (now,) = service.compare(image, "What color is the shape?", ["org/shapes"], "greedy", 8)
    assert untrained.text != "red" and now.text == "red"


def test_checkpoints_of_a_hub_run_are_named_by_their_folder(hf_cache, tiny_checkpoints):
    """--checkpoints-repo points the Space at org/run@<commit>:checkpoint-N: the dropdowns showed those 60-character
    references, and the API's names changed with every new commit. Named checkpoint-N, as the embedded ones are."""
    first, last = tiny_checkpoints[0], tiny_checkpoints[-1]
    commit = add_snapshot(hf_cache, "org/run", None, folders={first.name: first, last.name: last})
    specs = (f"org/run@{commit}:{first.name}", f"org/run@{commit}:{last.name}")
    service = ss.ComparisonService(SpaceSettings(checkpoints=specs, device="cpu"))
    assert service.labels == [first.name, last.name]
    image = str(EXAMPLES / "red-circle.png")
    for name in (last.name, specs[1]):  # the short name, or the full reference a client may hold
        (answer,) = service.compare(image, "What color is the shape?", [name], "greedy", 8)
        assert (answer.checkpoint, answer.text) == (last.name, "red")
        (batched,) = service.answer_batch([image], ["What color is the shape?"], [name], [8])
        assert (batched.checkpoint, batched.text, batched.error) == (last.name, "red", "")
    two_runs = ss.ComparisonService(SpaceSettings(checkpoints=(specs[1], str(last)), device="cpu"))
    assert len(set(two_runs.labels)) == 2  # the same folder name twice: the longer names tell them apart


def test_no_answer_runs_past_what_the_checkpoint_can_read(service):
    """The embedded checkpoints read 128 tokens, 64 of them the image; past that they answered noise
    ('purple square' for a red circle). Now the answer stops there, marked cut off, or a question
    that leaves no room is refused."""
    from vlm_lab.data import Sample
    from vlm_lab.generation import encode_inputs

    image = str(EXAMPLES / "red-circle.png")
    question = " ".join(["What color is the shape?"] * 8)
    loaded = service.cache.get(service.refs["checkpoint-0"], dtype="auto", device="cpu")
    prompt_tokens = int(encode_inputs(loaded.processor, [Sample("q", ss.read_image(image, max_pixels=10**6), question)])
                        ["attention_mask"].sum())
    assert prompt_tokens + 64 > 128 > prompt_tokens  # the question fits, a 64-token answer would not
    (untrained,) = service.compare(image, question, ["checkpoint-0"], "greedy", 64)  # it never says its end token
    assert untrained.truncated and prompt_tokens + untrained.new_tokens == 128
    assert "*cut off: the checkpoint reads no further*" in untrained.stats_markdown()
    (short,) = service.compare(image, "What color is the shape?", ["checkpoint-0"], "greedy", 8)
    assert "*cut off at max new tokens*" in short.stats_markdown()  # 8 fit: the limit asked for cut it
    with pytest.raises(VlmLabError, match=r"the image and question take \d+ tokens, and checkpoint-1000 reads at most "
                                          r"128 \(answer included\); shorten the question"):
        service.compare(image, " ".join(["What color is the shape?"] * 12), ["checkpoint-1000"], "greedy", 8)
    long, short = " ".join(["What color is the shape?"] * 12), "What color is the shape?"
    answers = service.answer_batch([image] * 3, [short, long, short], ["checkpoint-1000"] * 3, [8] * 3)
    assert [a.text for a in answers] == ["red", "", "red"] and "shorten the question" in answers[1].error


def test_out_of_memory_empties_the_cache_and_says_what_to_lower(service):
    import torch

    from vlm_lab.errors import MemoryBudgetError

    service.compare(str(EXAMPLES / "red-circle.png"), "What color is the shape?", ["checkpoint-0", "checkpoint-1000"])
    assert len(service.cache) >= 2
    with pytest.raises(MemoryBudgetError, match="cache was emptied. Compare fewer checkpoints at once or lower 'max new tokens'"):
        with service.out_of_memory_guard("checkpoint-1000"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")  # what torch raises on a full GPU
    assert len(service.cache) == 0
    again = service.compare(str(EXAMPLES / "red-circle.png"), "What color is the shape?", ["checkpoint-1000"])
    assert again[0].text == "red"  # reloaded, still serving


def test_out_of_memory_frees_what_the_failed_generation_held(service):
    """The tensors of the frames that ran out of memory are released before the cache is emptied and
    the memory logged, even while the error (and its traceback) is still held, as Gradio holds it."""
    import weakref

    import torch

    from vlm_lab.errors import MemoryBudgetError

    held = []

    def generate_that_runs_out():
        activations = torch.ones(1024)  # stands for what a generate call holds when CUDA runs out
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(MemoryBudgetError) as caught:
        with service.out_of_memory_guard("checkpoint-1000"):
            generate_that_runs_out()
    assert caught.value.__context__ is not None  # the out-of-memory error and its traceback are still reachable
    assert held[0]() is None, "the failed generation's tensors are still alive: emptying the cache frees nothing"


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch) -> Path:
    """W&B offline in folders of this test's own; returns where the offline runs go."""
    monkeypatch.setenv("WANDB_MODE", "offline")  # a key makes it on; offline keeps the test off the network
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    return tmp_path / "wandb_dir" / "wandb"


def test_interactions_go_to_wandb_only_with_a_key(tiny_dir, offline_wandb, caplog):
    assert not ss.InteractionLog({}).enabled
    interactions = ss.InteractionLog({"WANDB_API_KEY": "0" * 40}, config={"space": "test"})
    assert interactions.enabled
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu"), interactions=interactions)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        service.compare(str(EXAMPLES / "blue-square.png"), "What shape is it?", ["checkpoint-1000"])
        interactions.close()
    runs = list(offline_wandb.glob("offline-run-*/run-*.wandb"))
    problems = [str(w.message) for w in caught if "W&B" in str(w.message)] + [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert len(runs) == 1, (runs, problems)
    assert b"checkpoint-1000/latency_s" in runs[0].read_bytes(), problems  # the interaction was logged, not just the run


def test_api_batch_requests_are_logged_to_wandb_like_the_compare_button(tiny_checkpoints, offline_wandb):
    interactions = ss.InteractionLog({"WANDB_API_KEY": "0" * 40})
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_checkpoints[-1]),), device="cpu"), interactions=interactions)
    image = str(EXAMPLES / "blue-square.png")
    answers = service.answer_batch([image, image, image], ["What shape is it?", "What color is the shape?", ""], service.labels * 3)
    interactions.close()
    assert [bool(a.error) for a in answers] == [False, False, True]  # the empty question is refused, not logged
    (run,) = offline_wandb.glob("offline-run-*")
    tables = sorted((run / "files" / "media" / "table").glob("interaction_*.table.json"))
    logged = [json.loads(t.read_text())["data"][0] for t in tables]  # one row per answer: image, prompt, checkpoint, ...
    assert sorted(row[1] for row in logged) == ["What color is the shape?", "What shape is it?"], "the API's answers were not logged"


class HeldLog(ss.InteractionLog):
    """A W&B that cannot keep up (slow, or down and retrying): each interaction waits at its start until
    ``through`` is set (with a bound, so a failing test never hangs), then is logged for real (offline)."""

    def __init__(self, *args, **kwargs) -> None:
        import threading

        super().__init__(*args, **kwargs)
        self.through = threading.Event()

    def _log(self, *args) -> None:
        self.through.wait(timeout=120)
        super()._log(*args)


def _logged_tables(offline_wandb) -> list:
    (run,) = offline_wandb.glob("offline-run-*")
    return sorted((run / "files" / "media" / "table").glob("interaction_*.table.json"))


def test_a_slow_wandb_holds_a_bounded_number_of_interactions_and_drops_the_rest_counted(tiny_dir, offline_wandb, caplog):
    """While W&B does not keep up, interactions wait up to a bound (each holds its image: memory grew with traffic);
    the rest are dropped and counted, with one warning per warn_every_s, never delaying or failing an answer."""
    interactions = HeldLog({"WANDB_API_KEY": "0" * 40}, max_pending=3, warn_every_s=3600)
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu"), interactions=interactions)
    image = str(EXAMPLES / "blue-square.png")
    try:
        answers = [service.compare(image, "What shape is it?", ["checkpoint-1000"])[0] for _ in range(7)]
        assert interactions.dropped == 4  # 1 being logged + 2 waiting = the bound of 3; the other 4 dropped
    finally:
        interactions.through.set()
    assert [(a.text, a.error) for a in answers] == [("square", "")] * 7  # every visitor answered
    warned = [r.getMessage() for r in caplog.records if "not logged" in r.getMessage()]
    assert len(warned) == 1 and "1 interaction(s) not logged" in warned[0] and "4" not in warned[0], warned  # the first drop, once
    interactions.close()
    closing = [r.getMessage() for r in caplog.records if "were not logged" in r.getMessage()]
    assert closing == ["W&B interaction log: 4 interaction(s) were not logged: W&B was too slow to keep up (at most 3 wait to be logged)"]
    assert len(_logged_tables(offline_wandb)) == 3  # what waited was logged when W&B caught up


def test_float16_overflow_is_shown_as_such_not_as_an_answer(tiny_checkpoints, overflowing_checkpoint):
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_checkpoints[-1]), str(overflowing_checkpoint)),
                                                 device="cpu", dtype="float16"))  # fmt: skip
    image = str(EXAMPLES / "green-triangle.png")
    healthy, broken = service.compare(image, "What shape is it?", service.labels, "greedy", 8)
    assert (healthy.text, healthy.nonfinite) == ("triangle", False) and "NaN" not in healthy.stats_markdown()
    assert broken.nonfinite and "NaN/inf in the model's scores" in broken.stats_markdown()
    (batched,) = service.answer_batch([image], ["What shape is it?"], [service.labels[1]])  # the batched route says it too
    for answer in (broken, batched):  # both routes give the float16 advice, naming the Space's variable
        assert answer.nonfinite and "in float16" in answer.error and "VLM_LAB_DTYPE=float32" in answer.error
        assert "--dtype" not in answer.error  # a Space visitor has no command line
        assert "overflows float16's range" in answer.stats_markdown() and "weights may hold" not in answer.error
    (fine,) = service.answer_batch([image], ["What shape is it?"], [service.labels[0]])
    assert not fine.nonfinite and fine.error == ""


@pytest.fixture
def diverged_checkpoint(tiny_checkpoints, tmp_path) -> Path:
    """checkpoint-1000 whose final norm weights are NaN, as a diverged training run saves them:
    its scores are NaN in float32 too, so no dtype helps."""
    import math

    import torch
    from safetensors.torch import load_file, save_file

    path = tmp_path / "diverged" / "checkpoint-1000"
    shutil.copytree(tiny_checkpoints[-1], path)
    weights = load_file(path / "model.safetensors")
    name = "language_model.model.norm.weight"
    weights[name] = torch.full_like(weights[name], math.nan)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


def test_nan_weights_in_float32_get_the_check_the_checkpoint_advice_not_the_float16_one(tiny_checkpoints,
                                                                                         diverged_checkpoint):
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_checkpoints[-1]), str(diverged_checkpoint)),
                                                 device="cpu", dtype="float32"))  # fmt: skip
    image = str(EXAMPLES / "green-triangle.png")
    healthy, broken = service.compare(image, "What shape is it?", service.labels, "greedy", 8)
    (batched,) = service.answer_batch([image], ["What shape is it?"], [service.labels[1]])
    assert (healthy.text, healthy.nonfinite, healthy.error) == ("triangle", False, "")
    for answer in (broken, batched):  # the same verdict from the Compare button and from the API
        assert answer.nonfinite and answer.error.startswith(f"{service.labels[1]}: NaN or infinite next-token scores")
        assert "in float32" in answer.error and "weights may hold NaN or inf" in answer.error
        shown = answer.stats_markdown()
        assert "NaN/inf in the model's scores" in shown and "weights may hold NaN or inf" in shown
        assert "float16" not in answer.error + shown  # float32 already: float16 advice would send the user astray
    assert broken.error == batched.error


def test_noise_from_nan_scores_is_not_logged_to_wandb_as_an_answer(tiny_checkpoints, diverged_checkpoint,
                                                                     offline_wandb):
    interactions = ss.InteractionLog({"WANDB_API_KEY": "0" * 40})
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_checkpoints[-1]), str(diverged_checkpoint)),
                                                 device="cpu"), interactions=interactions)  # fmt: skip
    healthy, broken = service.compare(str(EXAMPLES / "blue-square.png"), "What shape is it?", service.labels)
    assert broken.nonfinite and not healthy.nonfinite
    interactions.close()
    (run,) = offline_wandb.glob("offline-run-*/run-*.wandb")
    logged = run.read_bytes()
    assert f"{healthy.checkpoint}/latency_s".encode() in logged
    assert f"{broken.checkpoint}/latency_s".encode() not in logged, "NaN noise was logged as an answer"


def test_a_checkpoint_that_breaks_inside_generate_fails_only_its_own_answers(tiny_checkpoints, mismatched_checkpoint,
                                                                               caplog):
    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_checkpoints[-1]), str(mismatched_checkpoint)),
                                                 device="cpu"))  # fmt: skip
    good, bad = service.labels
    image = str(EXAMPLES / "red-circle.png")
    healthy, broken = service.compare(image, "What color is the shape?", [good, bad], "greedy", 8)
    assert (healthy.text, healthy.error) == ("red", "")
    assert broken.text == "" and broken.error.startswith(f"{bad} failed while answering (ValueError: Image features")
    assert "the other checkpoints still answer" in broken.error
    assert "Traceback" in caplog.text  # the Space's log keeps what a maintainer needs
    # batched together with other callers' requests: only the requests for the broken checkpoint fail
    mine, theirs = service.answer_batch([image, image], ["What color is the shape?"] * 2, [good, bad])
    assert (mine.text, mine.error) == ("red", "") and theirs.error == broken.error
    with pytest.raises(VlmLabError, match="failed while answering"):  # alone: one clear error, not 'unexpected'
        service.compare(image, "What color is the shape?", [bad])


@pytest.mark.timeout(180)  # the second visitor waiting for the first would hang: a failure, not a wait
def test_a_sampled_answer_repeats_while_another_visitor_samples_at_the_same_time(tiny_dir):
    """Sampling is seeded so a repeat gives the same answer; torch's generator is one per process, so a
    second visitor's sampling between this one's seeding and its draws must not change its answer.

    The first generate call is held at its start (after its seed, before its draws) until the second
    visitor's whole request (its draws included) is answered: no lock serialises them any more."""
    import threading

    service = ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu"))
    image, prompt, ckpt = str(EXAMPLES / "red-circle.png"), "Describe the image.", ["checkpoint-0"]
    expected = service.compare(image, prompt, ckpt, "temperature(5)", 32)[0].text
    loaded = service.cache.get(service.refs["checkpoint-0"], dtype="auto", device="cpu")
    real_generate, entered, release = loaded.model.generate, threading.Event(), threading.Event()

    def held_once(*args, **kwargs):
        if not entered.is_set():
            entered.set()
            release.wait()
        return real_generate(*args, **kwargs)

    loaded.model.generate = held_once
    answers = {}
    first = threading.Thread(target=lambda: answers.setdefault("first", service.compare(image, prompt, ckpt, "temperature(5)", 32)))
    second = threading.Thread(target=lambda: answers.setdefault("second", service.compare(image, prompt, ckpt, "temperature(5)", 32)))
    try:
        first.start()
        entered.wait()
        second.start()
        second.join()  # answered while the first is held between its seeding and its draws
        assert "second" in answers and "first" not in answers
    finally:
        release.set()
        first.join()
        loaded.model.generate = real_generate
    assert [answers[k][0].text for k in ("first", "second")] == [expected, expected]
