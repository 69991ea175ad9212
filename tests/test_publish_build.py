"""publish_build: a failed build of the embedded checkpoints said in publish terms, whatever its folder's path holds.

Said as ``publish(PublishConfig(...))``'s caller passes it (``checkpoints='...'``); scripts/publish_space.py says its
flags (test_publish.py).

Real builds (``tiny.train`` refusing a folder before it trains) and the real message of a checkpoint that could not be
saved (``tiny_checkpoints._save_failed``); nothing mocked.
"""

from __future__ import annotations

import errno

import pytest

from vlm_lab.errors import OutputPathError
from vlm_lab.publish_build import build_embedded_checkpoints, in_publish_terms
from vlm_lab.tiny_checkpoints import _save_failed


@pytest.mark.parametrize("part", ["steps=100", "seed=0,batch_size=8"])
def test_a_folder_whose_path_reads_like_a_setting_is_named_as_it_is(tmp_path, part):
    """A run folder named as a sweep names it (``steps=100``) is a path, not a build setting: the settings' rewording
    (``steps=100`` -> ``--steps 100``) made ``--checkpoints '/x/--steps 100/checkpoints/shapes'`` of it."""
    folder = tmp_path / part / "checkpoints" / "shapes"
    folder.parent.mkdir(parents=True)
    folder.write_text("x")
    with pytest.raises(OutputPathError) as e:
        build_embedded_checkpoints(folder)
    said = str(e.value)
    assert said.startswith(f"checkpoints={str(folder)!r} is a file, not a folder"), said
    assert f"into checkpoints={str(folder)!r} (the default)" in said and " (with the flags named here)" not in said, said


def test_a_failed_save_in_a_folder_with_a_backslash_names_the_command_that_resumes_it(tmp_path):
    """The resume command is put into the message as a regex replacement: a backslash in its folder was read as an
    escape (`\\b` a backspace), and the command named another folder."""
    folder = tmp_path / "a\\b" / "shapes"
    folder.mkdir(parents=True)
    said = in_publish_terms(str(_save_failed(OSError(errno.ENOSPC, "No space left on device"), folder, 250)), str(folder))
    assert f"in {folder}: No space left on device (errno {errno.ENOSPC})" in said, said
    assert f"run `vlm-lab checkpoints build --out '{folder}'`" in said, said


@pytest.mark.parametrize("make", ["file", "model folder"])
def test_a_folder_whose_name_holds_a_quote_is_named_as_the_publishs_folder(tmp_path, make):
    """A path holding ``'`` is written ``out="..."`` (its repr switches quotes; a backslash is doubled in it): the
    rewording matched only ``out='...'`` and left TrainConfig's field in a publisher's message. A setting's words
    between spaces in it (`` steps=100 ``) are the path's too, not the build's ``--steps 100``."""
    folder = tmp_path / "it's a \\ földer, steps=100 (x)" / "shapes"
    folder.parent.mkdir(parents=True)
    if make == "file":
        folder.write_text("x")
    else:
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    with pytest.raises(OutputPathError) as e:
        build_embedded_checkpoints(folder)
    said = str(e.value)
    assert "out=" not in said, said
    assert said.startswith(f"checkpoints={str(folder)!r} "), said
    assert f"into checkpoints={str(folder)!r} (the default)" in said and " (with the flags named here)" not in said, said
