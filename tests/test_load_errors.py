"""``models.load_model`` on broken checkpoints: one line naming the checkpoint, the problem and the fix.

Each case is checkpoint-1000 of the tiny shapes run, copied and broken the way
real checkpoints break (a file left out, a config edited by hand). The CLI turns
these errors into one line and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlm_lab.errors import CheckpointNotFoundError
from vlm_lab.models import load_model


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config, indent=2))


def _resize(config: dict) -> None:  # what the weights were not trained with
    config["text_config"]["hidden_size"] = 96
    config["vision_config"]["hidden_size"] = 96


def _vocab_only(folder: Path) -> None:  # a partial copy: a BPE vocabulary without merges.txt or tokenizer.json
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.json").write_text('{"a": 0}')


BREAKS = {
    "no-tokenizer-json": (
        lambda f: (f / "tokenizer.json").unlink(),
        r"no tokenizer in the folder: tokenizer_config.json without tokenizer.json .*point at a complete model folder",
    ),
    "tokenizer-incomplete": (_vocab_only, r"its tokenizer cannot be built from its files .*; add tokenizer.json"),
    "config-not-json": (
        lambda f: (f / "config.json").write_text('{"model_type": "llava",\n'),
        r"config.json is not valid JSON \(Expecting property name .*\); fix the file, or save the checkpoint again",
    ),
    "processor-config-not-json": (
        lambda f: (f / "processor_config.json").write_text("{"),
        r"processor_config.json is not valid JSON \(.*\); fix the file",
    ),
    "no-chat-template": (
        lambda f: (f / "chat_template.jinja").unlink(),
        r"its processor has no chat template and does not place the image in a plain prompt itself .*add chat_template.jinja "
        r"to the folder .*set processor.chat_template",
    ),
    "not-a-vlm": (
        lambda f: _edit_config(f, lambda c: c.update(model_type="bert", architectures=["BertModel"])),
        r"not an image-text-to-text model: AutoModelForImageTextToText cannot load model_type 'bert'; point at a vision-language",
    ),
    "unknown-model-type": (
        lambda f: _edit_config(f, lambda c: c.update(model_type="nosuchmodel")),
        r"config.json is not usable \(.*`nosuchmodel`.*\); fix its model_type, or upgrade transformers",
    ),
    "weights-not-config": (
        lambda f: _edit_config(f, _resize),
        r"the weights do not match config.json \(\d+ tensors differ, first \S+: \d+x64 in the weights, \d+x96 from "
        r"config.json\); restore the config.json the weights were saved with",
    ),
}

def _deepspeed_zero(folder: Path) -> None:  # Trainer + ZeRO-3 without stage3_gather_16bit_weights_on_model_save
    (folder / "model.safetensors").unlink()
    (folder / "global_step1000").mkdir()
    (folder / "global_step1000" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"")
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed's converter\n")


def _fsdp_sharded(folder: Path) -> None:  # Trainer + FSDP with fsdp_state_dict_type: SHARDED_STATE_DICT
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model_fsdp_0").mkdir()
    (folder / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"")


BREAKS |= {
    "deepspeed-zero": (
        _deepspeed_zero,
        r"no weights in the folder: it holds a DeepSpeed ZeRO checkpoint \(global_step1000\); write the model's weights "
        r"with the zero_to_fp32.py beside it \(python .*/zero_to_fp32.py .* --safe_serialization\)",
    ),
    "fsdp-sharded": (
        _fsdp_sharded,
        r"no weights in the folder: it holds an FSDP sharded checkpoint \(pytorch_model_fsdp_0\); merge it into the "
        r"model's weights \(accelerate merge-weights .*/pytorch_model_fsdp_0 .*\)",
    ),
}

def _remote_code(folder: Path) -> None:  # a model whose config and code ship with it (auto_map), unknown to transformers
    _edit_config(folder, lambda c: c.update(model_type="my_vlm", auto_map={"AutoConfig": "configuration_my.MyConfig",
                                                                            "AutoModelForImageTextToText": "modeling_my.MyVLM"}))
    (folder / "configuration_my.py").write_text("raise SystemExit('its own code ran')\n")


def _remote_processor(folder: Path) -> None:  # a known model with a processor of its own
    path = folder / "processor_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"processor_class": "MyProcessor", "auto_map": {"AutoProcessor": "processing_my.MyProcessor"}}))
    (folder / "processing_my.py").write_text("raise SystemExit('its own code ran')\n")


REMOTE_CODE = r"it needs Python code shipped with the checkpoint{}, which vlm_lab does not run \(no trust_remote_code\); point at a version of the model that transformers supports natively"
BREAKS |= {
    "remote-code": (_remote_code, REMOTE_CODE.format(r" \(configuration_my.MyConfig, modeling_my.MyVLM\)")),
    "remote-processor": (_remote_processor, REMOTE_CODE.format("")),
}
# The broken checkpoints of the user audit, as `vlm-lab compare` reports them
AUDITED = ["no-tokenizer-json", "config-not-json", "no-chat-template", "not-a-vlm", "weights-not-config"]


@pytest.fixture
def broken(tiny_checkpoints, tmp_path):
    """``broken(case)``: checkpoint-1000 copied to tmp_path/case and broken as BREAKS[case] says."""

    def make(case: str) -> Path:
        folder = Path(shutil.copytree(tiny_checkpoints[-1], tmp_path / case))
        BREAKS[case][0](folder)
        return folder

    return make


@pytest.mark.parametrize("case", list(BREAKS))
def test_broken_checkpoint_is_one_line_with_the_fix(broken, case):
    folder = broken(case)
    with pytest.raises(CheckpointNotFoundError, match=BREAKS[case][1]) as err:
        load_model(folder, device="cpu")
    message = str(err.value)
    assert message.startswith(f"cannot load {str(folder)!r}: ") and "\n" not in message


@pytest.mark.parametrize("case", AUDITED)
def test_cli_reports_a_broken_checkpoint_in_one_line(broken, case, tmp_path):
    folder = broken(case)
    r = subprocess.run(
        [sys.executable, "-m", "vlm_lab.cli", "compare", str(folder), "--data", "shapes:val:4", "--no-cache",
         "--device", "cpu", "--out", str(tmp_path / "cmp")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "LOAD REPORT" not in r.stderr  # nor transformers' load table
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: CheckpointNotFoundError: cannot load {str(folder)!r}: ")
    assert r.stderr.rstrip().endswith(line)


def test_a_load_that_succeeds_still_shows_transformers_report(tiny_checkpoints, tmp_path, caplog):
    """The load report is held only to be replaced by a mismatch error; otherwise it is shown."""
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(tiny_checkpoints[-1], tmp_path / "extra-tensor"))
    weights = load_file(folder / "model.safetensors")
    weights["stray.weight"] = weights[next(iter(weights))].clone()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    load_model(folder, device="cpu")
    (report,) = [r.getMessage() for r in caplog.records if "LOAD REPORT" in r.getMessage()]
    assert "stray.weight" in report and "UNEXPECTED" in report


def test_a_named_checkpoint_a_trainer_is_still_writing_says_so(tiny_checkpoints, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoints[0], run / "checkpoint-0")
    live = run / "checkpoint-250"
    shutil.copytree(tiny_checkpoints[1], live, ignore=shutil.ignore_patterns("trainer_state.json"))
    (live / "model.safetensors").write_bytes((tiny_checkpoints[1] / "model.safetensors").read_bytes()[:4000])
    with pytest.raises(CheckpointNotFoundError) as caught:
        load_model(str(live), device="cpu")
    assert str(caught.value).startswith(f"{live / 'model.safetensors'} is not a valid safetensors file")
    assert str(caught.value).endswith("; it is not complete (a weight file is cut short), unlike checkpoint-0 beside it: "
                                      "a trainer may still be writing it; compare it once it is saved, or name a complete checkpoint")
    shutil.rmtree(run / "checkpoint-0")  # alone, it is only a broken checkpoint
    with pytest.raises(CheckpointNotFoundError) as caught:
        load_model(str(live), device="cpu")
    assert "trainer may still be writing" not in str(caught.value)


def test_a_checkpoint_with_its_own_code_is_refused_without_a_prompt_on_a_terminal(broken, tmp_path):
    """transformers asks 'Do you wish to run the custom code? [y/N]' on a terminal (15 s, then refuses); a 'y' would
    run the checkpoint's code. vlm_lab never asks: the CLI exits at once with the fix."""
    import os
    import pty

    folder = broken("remote-code")
    primary, terminal = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "vlm_lab.cli", "compare", str(folder), "--data", "shapes:val:2", "--no-cache",
             "--device", "cpu", "--out", str(tmp_path / "cmp")],
            stdin=terminal, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(primary)
    assert "Do you wish to run the custom code" not in r.stdout + r.stderr
    assert r.returncode == 2 and "which vlm_lab does not run (no trust_remote_code)" in r.stderr.splitlines()[-1]
