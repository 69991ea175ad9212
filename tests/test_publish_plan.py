"""What a publish's plan tells its reader: every file on request, what was left out and why, and where each
checkpoint comes from. scripts/publish_space.py runs as users run it, against tests/hub_emulator.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from test_publish import fail_text, hub, run_publish, space_dir  # noqa: F401 - fixtures
from vlm_lab.publish_stage import stage

SPACE = "alice/my-run-demo"
TRAINING_STATE = ("optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin")


def trainer_run(tiny_dir, tmp_path, steps=(300, 600, 900, 1200)):
    """A run folder as HF Trainer writes it: checkpoint-N with the model and its training state."""
    run = tmp_path / "runs" / "my-run"
    for step in steps:
        ckpt = run / f"checkpoint-{step}"
        shutil.copytree(tiny_dir / "checkpoint-1000", ckpt)
        for name in TRAINING_STATE:
            (ckpt / name).write_bytes(b"state")
    return run


def test_the_truncated_plan_says_how_to_see_every_file_and_list_files_shows_them(hub, space_dir, tiny_dir, tmp_path):  # noqa: F811
    run = trainer_run(tiny_dir, tmp_path)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=run)
    assert r.returncode == 0, fail_text(r)
    more = [line for line in r.stdout.splitlines() if "... and" in line]
    assert more and all("--list-files" in line for line in more), fail_text(r)

    full = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", "--list-files", checkpoints=run)
    assert full.returncode == 0, fail_text(full)
    assert "... and" not in full.stdout, full.stdout
    staged = stage(space_dir=space_dir, checkpoints=run)
    listed = set(re.findall(r"^  \+ (\S+)$", full.stdout, re.M))
    assert listed == set(staged.files), sorted(set(staged.files) ^ listed)


def test_the_report_says_what_was_left_out_by_kind_and_list_files_names_each(hub, space_dir, tiny_dir, tmp_path):  # noqa: F811
    run = trainer_run(tiny_dir, tmp_path)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=run)
    assert r.returncode == 0, fail_text(r)
    left = [line for line in r.stdout.splitlines() if line.startswith("left out:")]
    assert len(left) == 1, fail_text(r)
    for name in (*TRAINING_STATE, "trainer_state.json"):  # the Trainer's state: 4 checkpoints each
        assert f"{name} x4" in left[0], left[0]
    for junk in ("__pycache__/", ".ipynb_checkpoints/", ".env", "wandb/", ".venv/"):
        assert junk in left[0], left[0]
    assert "processor" not in left[0] and "tokenizer" not in left[0], left[0]
    assert "--list-files" in left[0], left[0]

    full = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", "--list-files", checkpoints=run)
    assert full.returncode == 0, fail_text(full)
    assert f"{run}/checkpoint-300/optimizer.pt" in full.stdout, full.stdout
    assert f"{space_dir}/.env" in full.stdout, full.stdout


def test_the_plan_says_where_your_own_checkpoints_come_from(hub, space_dir, tiny_dir, tmp_path):  # noqa: F811
    run = trainer_run(tiny_dir, tmp_path)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=run)
    assert r.returncode == 0, fail_text(r)
    for step in (300, 600, 900, 1200):
        assert re.search(rf"^  checkpoints/shapes/checkpoint-{step} +<- {re.escape(str(run))}/checkpoint-{step}$",
                         r.stdout, re.M), fail_text(r)

    (tmp_path / "checkpoints").mkdir()  # the embedded default, as the command sees it from where it runs
    (tmp_path / "checkpoints" / "shapes").symlink_to(tiny_dir)
    embedded = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run",
                           checkpoints=Path("checkpoints/shapes"), cwd=tmp_path)
    assert embedded.returncode == 0, fail_text(embedded)
    assert "<-" not in embedded.stdout and "embedded" in embedded.stdout, fail_text(embedded)


def test_the_plan_says_the_final_model_at_the_run_root_is_not_published(hub, space_dir, tiny_dir, tmp_path):  # noqa: F811
    """Trainer.save_model() at the end of training wrote the final model at the run's root: `vlm-lab compare RUN`
    compares it after the checkpoints, but the publish left it out without a word (its 'left out' line counted
    only the checkpoints' training state), so the Space silently lacked the model a researcher would show first."""
    run = trainer_run(tiny_dir, tmp_path, steps=(300, 600))
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "processor_config.json", "chat_template.jinja"):
        shutil.copy(tiny_dir / "checkpoint-750" / name, run / name)  # other weights than checkpoint-600's
    (run / "trainer_state.json").write_text('{"global_step": 1000}')
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=run)
    assert r.returncode == 0, fail_text(r)
    note = [line for line in r.stdout.splitlines() if "final model" in line]
    assert len(note) == 1 and str(run) in note[0] and "not published" in note[0] and "checkpoint-1000" in note[0], fail_text(r)

    shutil.copy(run / "checkpoint-600" / "model.safetensors", run / "model.safetensors")  # saved from the last one
    same = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=run)
    assert same.returncode == 0 and "final model" not in same.stdout, fail_text(same)  # it is published, as checkpoint-600
