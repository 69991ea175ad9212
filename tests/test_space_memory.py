"""vlm_lab.space_memory: the Space's memory plan counts every generation the serving plan runs at once.

The model cache may hold ``cache_budget_bytes`` of weights; the rest of the target's memory must hold the KV
cache and activations of all the generations that run at once: two on a GPU of 24 GB or more (the Compare
button and the batched API share them), one per core (up to 4) plus one batch on CPU. The checkpoints are
LLaVA-7B-sized ``config.json`` files (estimate only, nothing loaded). There is no GPU here: the GPU cases give
the hardware as an input, or answer torch.cuda's queries of the device (its name and memory), nothing more.
"""

from __future__ import annotations

import re
import types

import pytest
import torch

from vlm_lab import memory, memory_synthetic
from vlm_lab.memory_targets import MIB, budget_bytes, get_target
from vlm_lab.space_memory import plan_memory
from vlm_lab.space_settings import MAX_BEAMS, Hardware, Slots, SpaceSettings, plan_serving

from space_server import ROOT, running_space

# rows counted with estimate's default prompt, as the tests' own estimates are (the longest question's: below)
AT_32 = {"prompt_tokens": 32}
A100 = Hardware(device="cuda", cores=16, gpu_memory=81920 * MIB, gpu_name="NVIDIA A100-SXM4-80GB")


@pytest.fixture(scope="module")
def llava_7b(tmp_path_factory):
    size = memory_synthetic.LlavaSize(text_width=4096, text_layers=32, text_heads=32, text_kv_heads=32,
                                      text_intermediate=11008)
    config = memory_synthetic.llava_config(size, vocab_size=32064)
    return memory_synthetic.write_config_only(tmp_path_factory.mktemp("cfg") / "llava-7b", config)


def promised(plan, est, target: str, slots: Slots) -> int:
    """What the plan lets the process use at once: the cache's weights, every generation's rows, the runtime."""
    device = get_target(target).device
    load_copy = est.load_bytes(device) - est.weight_bytes - est.overhead_bytes(device)
    rows = slots.rows(plan.max_batch_size)
    return plan.cache_budget_bytes + rows * est.per_sample_bytes + est.overhead_bytes(device) + load_copy


@pytest.fixture
def an_a100(monkeypatch):
    """torch.cuda says there is an 80 GB A100 (its queries only: CUDA cannot run here)."""
    props = types.SimpleNamespace(total_memory=A100.gpu_memory, name=A100.gpu_name, major=8, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: A100.gpu_name)


def test_on_an_a100_the_memory_plan_leaves_room_for_both_generations_the_serving_plan_runs(llava_7b, an_a100):
    """Before, the plan kept room for one batch of 64 beside the cache, and the serving plan ran two at once:
    the cache could fill 74.6 GB of weights while two batches needed 12.6 GB more, past the A100's 81.6 GB."""
    plan = plan_memory([llava_7b], **AT_32, device="cuda", max_new_tokens=64)
    serving = plan_serving(SpaceSettings(checkpoints=(str(llava_7b),), device="cuda"), memory=plan)
    assert plan.target == "a100-large" and serving.generate_limit == 2 and serving.batch_group == "generate"
    est = memory.estimate(llava_7b, device="cuda", target="a100-large", max_new_tokens=64)
    slots = Slots(compare=serving.generate_limit, batch=serving.batch_limit, shared=True)
    assert serving.max_batch_size == plan.max_batch_size == 64
    assert promised(plan, est, "a100-large", slots) <= budget_bytes("a100-large")
    assert plan.cache_budget_bytes >= est.weight_bytes  # and the model still loads


@pytest.mark.parametrize("slots", [Slots(compare=2, batch=2, shared=True), Slots(compare=2, batch=1, shared=False)],
                         ids=["one-group", "two-groups"])
def test_the_batch_shrinks_so_that_every_generation_at_once_fits_beside_the_cache(llava_7b, slots):
    """A 7B model on a T4's 16 GB: one generation fits a batch of 11; at once they share that room."""
    plan = plan_memory([llava_7b], **AT_32, device="cuda", target="t4-small", max_new_tokens=64, slots=slots)
    est = memory.estimate(llava_7b, device="cuda", target="t4-small", max_new_tokens=64)
    alone = memory.verdict(est, "t4-small").max_batch_size
    assert plan.slots == slots and 1 <= plan.max_batch_size < alone
    assert promised(plan, est, "t4-small", slots) <= budget_bytes("t4-small")
    assert plan.cache_budget_bytes >= est.weight_bytes
    # the biggest batch that does: one more row each and the model would no longer fit the cache
    more_rows = slots.rows(plan.max_batch_size + 1) - slots.rows(plan.max_batch_size)
    assert plan.cache_budget_bytes - more_rows * est.per_sample_bytes < est.weight_bytes


def test_generations_at_once_are_capped_to_what_memory_holds_and_the_serving_plan_follows(llava_7b):
    """256 new tokens: one generation (a Compare may ask beam(4): 4 rows) fits beside the 7B model on a T4's
    memory, two do not. The plan says one, and the serving plan runs one at a time, saying why."""
    plan = plan_memory([llava_7b], **AT_32, device="cuda", target="t4-small", max_new_tokens=256,
                       slots=Slots(compare=2, batch=2, shared=True))
    est = memory.estimate(llava_7b, device="cuda", target="t4-small", max_new_tokens=256)
    assert plan.slots == Slots(compare=1, batch=1, shared=True)
    assert promised(plan, est, "t4-small", plan.slots) <= budget_bytes("t4-small")
    assert any("1 generation at a time" in note and "2 at a time would not fit" in note for note in plan.notes)
    serving = plan_serving(SpaceSettings(checkpoints=(str(llava_7b),), device="cuda"), memory=plan, hardware=A100)
    assert (serving.generate_limit, serving.batch_limit) == (1, 1)
    assert "1 generation(s) at a time (memory holds 1 of 2)" in serving.why


def test_a_batch_size_set_by_the_owner_is_kept_and_the_generations_at_once_give_way(llava_7b):
    plan = plan_memory([llava_7b], **AT_32, device="cuda", target="t4-small", max_new_tokens=64, batch_size=8,
                       slots=Slots(compare=2, batch=2, shared=True))
    assert plan.max_batch_size == 8 and plan.slots == Slots(compare=1, batch=1, shared=True)


def test_multiple_beams_count_as_rows_of_the_compare_generations():
    assert Slots(compare=2, batch=2, shared=True).rows(1) == 2 * MAX_BEAMS  # either endpoint, in each slot
    assert Slots(compare=2, batch=2, shared=True).rows(16) == 32
    assert Slots(compare=4, batch=1, shared=False).rows(16) == 4 * MAX_BEAMS + 16  # 4 Compares and a batch


# -- beam search the memory holds ---------------------------------------------------------------


@pytest.mark.parametrize("max_new_tokens, beams", [(64, MAX_BEAMS), (320, 3), (448, 2), (640, 1)])
def test_a_compare_may_ask_for_no_more_beams_than_the_memory_holds(llava_7b, max_new_tokens, beams):
    """On CPU slots (a Compare and a batch at once) beside the 7B model on a T4's memory: room for 11.4 rows at 64 new
    tokens, 4.6 at 320, 3.6 at 448, 2.6 at 640. A Compare of beam(4) and a batch of one are 5 rows: one at a time
    held no beam(4) at 320 tokens, yet the plan counted it and the Space offered it (and ran out of memory)."""
    if beams < MAX_BEAMS:  # the scenario: the rows of one Compare of beam(beams + 1) and a batch of one do not fit
        est = memory.estimate(llava_7b, device="cuda", target="t4-small", max_new_tokens=max_new_tokens)
        rows = (budget_bytes("t4-small") - est.load_bytes("cuda")) / est.per_sample_bytes
        assert beams + 1 <= rows < beams + 2, rows
    slots = Slots(compare=2, batch=1, shared=False)
    plan = plan_memory([llava_7b], **AT_32, device="cuda", target="t4-small", max_new_tokens=max_new_tokens, slots=slots)
    est = memory.estimate(llava_7b, device="cuda", target="t4-small", max_new_tokens=max_new_tokens)
    assert plan.max_beams == beams
    held = plan.slots.rows(plan.max_batch_size, plan.max_beams) * est.per_sample_bytes
    load_copy = est.load_bytes("cuda") - est.weight_bytes - est.overhead_bytes("cuda")
    assert plan.cache_budget_bytes + held + est.overhead_bytes("cuda") + load_copy <= budget_bytes("t4-small")
    assert plan.cache_budget_bytes >= est.weight_bytes  # the largest checkpoint still loads
    note = plan.notes[-1]
    if beams == MAX_BEAMS:
        assert f"a Compare may ask for beam({MAX_BEAMS})" in note and "would not fit" not in note.split("need")[0]
    elif beams > 1:
        assert f"a Compare may ask for beam({beams}); beam({beams + 1}) would not fit" in note
    else:
        assert "no beam search; beam(2) would not fit" in note
    assert (plan.beams_note() == "") == (beams == MAX_BEAMS)


def test_on_a_gpu_one_slot_holds_as_many_beams_as_batch_rows(llava_7b, an_a100):
    """One concurrency group: a Compare's beams and a batch's rows take turns, so beams cost no more than the batch."""
    plan = plan_memory([llava_7b], **AT_32, device="cuda", max_new_tokens=64)
    assert plan.max_beams == MAX_BEAMS and plan.beams_note() == ""


def test_the_space_refuses_beams_its_memory_cannot_hold_says_so_on_the_page_and_keeps_serving(tiny_dir, llava_7b_worded,
                                                                                             tmp_path):
    """A real app planning for a T4 with the 7B config beside the tiny checkpoints, at up to 384 new tokens: with the
    longest question (500 characters, 504 tokens) a Compare with the 7B holds no second beam. The page says so, for
    that question, the log what the plan assumed; a short beam(4) on the tiny checkpoint answers, the short question
    gets beams with the 7B up to the length its tokens leave, past it it is refused with what fits, and the app serves
    on. (The 7B has no weights: it is estimated, left out of the defaults, never loaded.)"""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    big = llava_7b_worded
    example = handle_file(ROOT / "space" / "examples" / "red-circle.png")
    env = {"VLM_LAB_CHECKPOINTS": f"{tiny_dir / 'checkpoint-1000'},{big}", "VLM_LAB_TARGET": "t4-small",
           "VLM_LAB_MAX_NEW_TOKENS": "384"}
    plan = plan_memory([tiny_dir / "checkpoint-1000", big], device="cpu", target="t4-small", max_new_tokens=384)
    question = "What color is the shape?"
    p = question_tokens(big, question)
    assert plan.max_beams == 1 and plan.prompt_tokens == question_tokens(big, "a." * 250)
    tokens = {beams: plan.beam_tokens(big, beams, p) for beams in (2, 3, 4)}
    assert tokens[2] == 384 and 0 < tokens[4] < tokens[3] < 384, tokens
    with running_space(env, workdir=tmp_path / "app") as (url, log_path):
        log = log_path.read_text()
        assert "memory verdict on t4-small: generating: 1 generation at a time" in log
        assert "no beam search; beam(2) would not fit at 384 new tokens" in log
        assert (f"memory verdict on t4-small: rows counted for questions of up to 500 characters: up to "
                f"{plan.prompt_tokens} text tokens ({big}: its tokenizer's worst, 'a.' repeated)") in log
        import urllib.request

        with urllib.request.urlopen(url + "/config") as r:
            page = r.read().decode()
        assert ("The `/compare` endpoint also takes `beam(N)` decoding, up to beam(4); on t4-small with the largest "
                "checkpoint and a question of 500 characters (a shorter one leaves more), beam(2) fits not at all, "
                "beam(3) not at all, beam(4) not at all.") in page
        client = Client(url, verbose=False, analytics_enabled=False)

        def ask(strategy: str, tokens: int, second: str = "(none)"):
            out = client.predict(example, question, "checkpoint-1000", second, "(none)", strategy,
                                 tokens, api_name="/compare")
            return out[0]["value"]

        assert ask("beam(4)", 8) == "red"
        with pytest.raises(AppError, match=re.escape(
                f"'beam(4)' with 384 new tokens does not fit in the memory of t4-small with {big}: beam(4) fits up to "
                f"{tokens[4]} new tokens with this question ({p} tokens); ask for at most {tokens[4]} new tokens, a "
                "shorter question, or for beam(2) or fewer")):
            ask("beam(4)", 384, str(big))
        with pytest.raises(AppError, match=re.escape("'beam(5)' asks for 5 beams; this Space allows at most beam(4)")):
            ask("beam(5)", 8)
        assert ask("beam(2)", 8) == "red" and ask("greedy", 8) == "red"
        assert "Traceback" not in log_path.read_text()


def test_fewer_new_tokens_hold_more_beams_and_the_plan_says_up_to_how_many(llava_7b, tiny_dir):
    """Rows grow with the tokens generated (KV cache, activations): at 640 new tokens a Compare beside the 7B on a T4
    holds no second beam, but a shorter answer holds beam(4). The cap was computed once, at the Space's largest max
    new tokens, and refused beam(2) at 8 tokens too. Each count of beams fits up to a number of new tokens: the cache
    full, every other generation at its largest, this Compare's rows fit; one token more and they would not."""
    tiny = tiny_dir / "checkpoint-1000"
    plan = plan_memory([llava_7b, tiny], **AT_32, device="cuda", target="t4-small", max_new_tokens=640,
                       slots=Slots(compare=2, batch=1, shared=False))
    assert plan.max_beams == 1 and plan.slots == Slots(compare=1, batch=1, shared=False)

    def est(n):
        return memory.estimate(llava_7b, device="cuda", target="t4-small", max_new_tokens=n)

    longest = est(640)
    others = plan.slots.rows(plan.max_batch_size, plan.max_beams) - plan.max_beams  # the batch, at its largest
    fixed = plan.cache_budget_bytes + others * longest.per_sample_bytes + longest.overhead_bytes("cuda")

    def used(beams, n):
        return fixed + beams * est(n).per_sample_bytes

    tokens = {beams: plan.beam_tokens(llava_7b, beams) for beams in range(2, MAX_BEAMS + 1)}
    assert 1 < tokens[4] < tokens[3] < tokens[2] < 640, tokens
    for beams, n in tokens.items():
        assert used(beams, n) <= budget_bytes("t4-small") < used(beams, n + 1), (beams, n)
    assert plan.beams_at(llava_7b, tokens[3]) == 3 and plan.beams_at(llava_7b, 640) == 1
    assert plan.beam_tokens(tiny, MAX_BEAMS) == 640  # its rows are small: any length holds beam(4)
    assert plan.beams_note() == (f"on t4-small with the largest checkpoint, beam(2) fits up to {tokens[2]} new tokens, "
                                 f"beam(3) up to {tokens[3]}, beam(4) up to {tokens[4]}")


def test_a_short_answer_gets_its_beams_and_a_long_one_is_told_what_fits(tiny_dir, llava_7b_worded, tmp_path):
    """The service checks a Compare's beams at its own max new tokens, for the checkpoints it asked (the tiny one's rows
    fit beam(4) at any length); a refusal says up to how many tokens those beams fit, and the service serves on. The
    lengths were estimated before it served: a request estimates nothing (an estimate builds the model from its config,
    and transformers sets torch's process-wide default dtype meanwhile, under other visitors' generations). Questions
    of up to 60 characters: the refused one is the longest, of the tokenizer's worst characters."""
    import shutil

    from vlm_lab.errors import ConfigError
    from vlm_lab.space_service import ComparisonService

    big_dir = shutil.copytree(llava_7b_worded, tmp_path / "llava-7b")
    settings = SpaceSettings(checkpoints=(str(tiny_dir / "checkpoint-1000"), str(big_dir)), device="cpu",
                             target="t4-small", max_new_tokens=640, max_prompt_chars=60)
    service = ComparisonService(settings)  # the 7B is estimated only: it is never loaded here
    assert service.memory.max_beams == 1
    (big_dir / "config.json").unlink()  # nothing left to estimate from: the requests below look their limits up
    red = str(ROOT / "space" / "examples" / "red-circle.png")
    (answer,) = service.compare(red, "What color is the shape?", ["checkpoint-1000"], "beam(4)", 8)
    assert (answer.text, answer.error) == ("red", "")
    big = next(label for label in service.labels if label != "checkpoint-1000")
    fits = service.memory.beam_tokens(service.refs[big], 4)
    held, longest = service.memory.beams_at(service.refs[big], fits + 1), "a." * 30
    with pytest.raises(ConfigError) as caught:
        service.compare(red, longest, ["checkpoint-1000", big], "beam(4)", fits + 1)
    assert str(caught.value) == (f"'beam(4)' with {fits + 1} new tokens does not fit in the memory of t4-small with {big}: "
                                 f"beam(4) fits up to {fits} new tokens with this question ({service.memory.prompt_tokens} "
                                 f"tokens); ask for at most {fits} new tokens, a shorter question, or for beam({held}) or fewer")
    for n, beams in ((fits, 4), (640, 1)):  # what the message offers is not refused
        service.check_beams(service.generation_config(f"beam({beams})", n), ["checkpoint-1000", big])
    with pytest.raises(ConfigError, match=re.escape("'beam(2)' with 640 new tokens does not fit in the memory of "
                                                    f"t4-small with {big}: beam(2) fits up to ")):
        service.check_beams(service.generation_config("beam(2)", 640), [big])
    assert service.generation_config("nucleus (top-p 0.9)", 640).strategy == "nucleus(0.9)"
    (answer,) = service.compare(red, "What color is the shape?", ["checkpoint-1000"], "greedy", 8)
    assert answer.text == "red"


# -- the longest question the Space accepts -------------------------------------------------------


@pytest.fixture(scope="module")
def llava_7b_worded(llava_7b, tiny_dir, tmp_path_factory):
    """The 7B config with the tiny checkpoints' tokenizer and chat template: a word-level tokenizer whose every
    punctuation mark is a token of its own, so a 500-character question can take 500 tokens."""
    import shutil

    out = shutil.copytree(llava_7b, tmp_path_factory.mktemp("cfg") / "llava-7b-worded")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_dir / "checkpoint-1000" / name, out / name)
    return out


def question_tokens(folder, question: str) -> int:
    """Text tokens of ``question`` as generation sends it (the chat template's turn, the image's placeholder with it)."""
    from transformers import AutoTokenizer

    from vlm_lab.generation import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return len(tokenizer(render_prompt(tokenizer, question), verbose=False)["input_ids"])


def test_the_plan_holds_for_the_longest_question_the_space_accepts(llava_7b_worded):
    """The plan counted each row at 32 prompt tokens (estimate's default), but a visitor may type 500 characters: with
    this tokenizer 'a.a.a...' is 504 text tokens, each row of every generation at once is that much longer, and the
    cache, batch and beams the plan promised on a T4 beside the 7B no longer fit. The plan counts the longest
    question through each checkpoint's own tokenizer and chat template, and says so in its notes."""
    question = "a." * 250
    p = question_tokens(llava_7b_worded, question)
    assert len(question) == SpaceSettings.max_prompt_chars and p > 500
    plan = plan_memory([llava_7b_worded], device="cuda", target="t4-small", max_new_tokens=64,
                       slots=Slots(compare=2, batch=1, shared=False))
    est = memory.estimate(llava_7b_worded, device="cuda", target="t4-small", max_new_tokens=64, prompt_tokens=p)
    rows = plan.slots.rows(plan.max_batch_size, plan.max_beams)
    load_copy = est.load_bytes("cuda") - est.weight_bytes - est.overhead_bytes("cuda")
    used = plan.cache_budget_bytes + rows * est.per_sample_bytes + est.overhead_bytes("cuda") + load_copy
    assert used <= budget_bytes("t4-small"), (used, budget_bytes("t4-small"))
    assert plan.cache_budget_bytes >= est.weight_bytes
    assert plan.prompt_tokens == p
    assert any(f"questions of up to 500 characters: up to {p} text tokens" in note for note in plan.notes), plan.notes


def test_a_short_question_gets_the_beams_the_longest_one_leaves_and_a_long_one_is_told_what_fits(tiny_dir,
                                                                                                  llava_7b_worded,
                                                                                                  tmp_path):
    """Rows are counted with the longest question, but a row's memory follows its prompt (and its answer): a question
    of 10 tokens leaves a longer answer than one of 504. The service counts each request's question
    with the checkpoint's tokenizer (read when the plan was made: its files are gone below) and looks its limit up;
    the 500-character question is refused at the same length, with what fits. At the limit the short question's rows
    fit the room a Compare keeps, one token more and they would not."""
    import shutil

    from vlm_lab.errors import ConfigError
    from vlm_lab.space_service import ComparisonService

    big_dir = shutil.copytree(llava_7b_worded, tmp_path / "llava-7b")
    settings = SpaceSettings(checkpoints=(str(tiny_dir / "checkpoint-1000"), str(big_dir)), device="cpu",
                             target="t4-small", max_new_tokens=512)
    short, long = "What color is the shape?", "a." * 250
    p_short, p_long = question_tokens(big_dir, short), question_tokens(big_dir, long)
    service = ComparisonService(settings)
    plan, big = service.memory, next(label for label in service.labels if label != "checkpoint-1000")
    ref = service.refs[big]
    assert plan.prompt_tokens == p_long and plan.max_beams == 1
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (big_dir / name).unlink()  # the requests below look up, count with the tokenizer the plan read, estimate nothing
    fits_long, fits_short = plan.beam_tokens(ref, 4, p_long), plan.beam_tokens(ref, 4, p_short)
    assert fits_long < fits_short, (fits_long, fits_short)
    assert plan.beam_tokens(ref, 4) == fits_long  # the page's: the longest question's

    def used(prompt: int, n: int) -> int:  # the cache full, the batch at its longest, and this Compare's beam(4)
        longest = memory.estimate(llava_7b_worded, device="cuda", target="t4-small", max_new_tokens=512,
                                  prompt_tokens=p_long)
        at = memory.estimate(llava_7b_worded, device="cuda", target="t4-small", max_new_tokens=n, prompt_tokens=prompt)
        others = plan.slots.rows(plan.max_batch_size, plan.max_beams) - plan.max_beams
        return (plan.cache_budget_bytes + others * longest.per_sample_bytes + longest.overhead_bytes("cuda")
                + 4 * at.per_sample_bytes)

    assert used(p_short, fits_short) <= budget_bytes("t4-small") < used(p_short, fits_short + 1)
    n = fits_long + 1
    service.check_beams(service.generation_config("beam(4)", n), ["checkpoint-1000", big], short)
    with pytest.raises(ConfigError) as caught:
        service.check_beams(service.generation_config("beam(4)", n), ["checkpoint-1000", big], long)
    held = plan.beams_at(ref, n, p_long)
    fewer = f"beam({held}) or fewer" if held > 1 else "greedy or sampling"
    said = (f"beam(4) fits up to {fits_long} new tokens with this question ({p_long} tokens); ask for at most "
            f"{fits_long} new tokens, a shorter question, or for {fewer}") if fits_long else (
            f"beam(4) fits at no length with this question ({p_long} tokens); ask for {fewer}, or a shorter question")
    assert str(caught.value) == f"'beam(4)' with {n} new tokens does not fit in the memory of t4-small with {big}: {said}"
    red = str(ROOT / "space" / "examples" / "red-circle.png")
    (answer,) = service.compare(red, short, ["checkpoint-1000"], "beam(4)", 8)
    assert (answer.text, answer.error) == ("red", "")


def test_every_question_length_gets_exactly_the_beams_its_rows_fit(llava_7b_worded):
    """A row's prefill headroom follows its prompt alone, its KV cache the prompt and answer together: the plan cannot
    shift the longest question's limit by the tokens a shorter one saves (it said beam(4) fits 165 new tokens with a
    question of 10 tokens where 166 fit). At each question's limit its rows fit the room a Compare keeps, one token
    more and they would not; where none fits, not even one token does."""
    plan = plan_memory([llava_7b_worded], device="cuda", target="t4-small", max_new_tokens=512,
                       slots=Slots(compare=2, batch=1, shared=False))
    p_long = plan.prompt_tokens
    assert plan.max_beams == 1 and p_long > 500
    longest = memory.estimate(llava_7b_worded, device="cuda", target="t4-small", max_new_tokens=512, prompt_tokens=p_long)
    others = plan.slots.rows(plan.max_batch_size, plan.max_beams) - plan.max_beams
    fixed = plan.cache_budget_bytes + others * longest.per_sample_bytes + longest.overhead_bytes("cuda")

    def used(beams: int, prompt: int, n: int) -> int:
        at = memory.estimate(llava_7b_worded, device="cuda", target="t4-small", max_new_tokens=n, prompt_tokens=prompt)
        return fixed + beams * at.per_sample_bytes

    limits = {}
    for prompt in (10, 100, 300, p_long):
        for beams in range(2, MAX_BEAMS + 1):
            n = limits[prompt, beams] = plan.beam_tokens(llava_7b_worded, beams, prompt)
            if n == 0:
                assert used(beams, prompt, 1) > budget_bytes("t4-small"), (prompt, beams)
            elif n < 512:
                assert used(beams, prompt, n) <= budget_bytes("t4-small") < used(beams, prompt, n + 1), (prompt, beams, n)
            else:
                assert used(beams, prompt, 512) <= budget_bytes("t4-small"), (prompt, beams)
    assert limits[10, 4] > limits[300, 4] and limits[10, 2] > limits[100, 2] > limits[300, 2], limits
    assert plan.beam_tokens(llava_7b_worded, 4) == limits[p_long, 4]  # the page's: the longest question's
