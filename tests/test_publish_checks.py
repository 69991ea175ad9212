"""publish_checks against the local Hub emulator: what a publish says before it writes anything.

The real huggingface_hub client, through scripts/publish_space.py (tests/test_publish.py's ``run_publish``).
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from test_publish import fail_text, hub, run_publish, space_dir  # noqa: F401 - hub and space_dir are fixtures


def test_a_space_name_one_typo_from_an_existing_space_is_named_before_a_new_space_is_created(hub, space_dir):  # noqa: F811
    """`alice/my-vml` for `alice/my-vlm`: the plan said only "(new)" and a publish created a second Space, billed
    on its own (t4-small: $0.40/h), with nothing that said alice already had one of a name a letter apart."""
    hub.add_space("alice/my-vlm", hardware="t4-small")
    hub.add_space("alice/other-demo")
    r = run_publish(hub, "alice/my-vml", "--space-dir", str(space_dir), "--dry-run")
    assert r.returncode == 0, fail_text(r)
    said = r.stdout + r.stderr
    assert "alice/my-vml does not exist" in said and "alice/my-vlm" in said, fail_text(r)
    assert "alice/other-demo" not in said, fail_text(r)

    r = run_publish(hub, "alice/my-vlm", "--space-dir", str(space_dir), "--dry-run")  # the Space that exists: no note
    assert r.returncode == 0 and "does not exist" not in r.stdout + r.stderr, fail_text(r)
    r = run_publish(hub, "alice/brand-new", "--space-dir", str(space_dir), "--dry-run")  # nothing close: no note
    assert r.returncode == 0 and "does not exist" not in r.stdout + r.stderr, fail_text(r)


@pytest.mark.parametrize("where", ["missing", "outside"])
def test_examples_the_space_could_not_show_stop_the_publish(hub, space_dir, tmp_path, where):  # noqa: F811
    """examples/examples.jsonl naming an image outside the Space folder (not uploaded) or no image at all: the Space
    would say `cannot start` minutes after the upload."""
    outside = tmp_path / "mydata" / "dog.jpg"
    outside.parent.mkdir()
    Image.new("RGB", (8, 8), "blue").save(outside)
    image = str(outside) if where == "outside" else "images/gone.jpg"
    (space_dir / "examples").mkdir()
    (space_dir / "examples" / "examples.jsonl").write_text(json.dumps({"image": image, "prompt": "What color?"}) + "\n")
    r = run_publish(hub, "alice/my-vlm", "--space-dir", str(space_dir))
    assert r.returncode == 2, fail_text(r)
    assert "examples.jsonl" in r.stderr and ("dog.jpg" if where == "outside" else "gone.jpg") in r.stderr, fail_text(r)
    assert "nothing was uploaded" in r.stderr and not hub.writes(), fail_text(r)
