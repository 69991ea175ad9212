"""Sweep files read as YAML 1.2, with the values YAML 1.1 read otherwise refused (vlm_lab/sweep_yaml.py)."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from test_sweep import write_notebook
from vlm_lab import sweep
from vlm_lab.cli import main
from vlm_lab.errors import SweepError


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "nb.ipynb")
    return tmp_path


def _write(folder, body: str, name: str = "s"):
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nnotebook: nb.ipynb\n" + textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    "body, line",
    [
        ("grid:\n  tag: [greedy, no]\n", "line 4, column 17: no -> write 'no' (the text) or false (the boolean, as read before)"),
        ("grid:\n  tag: [yes]\n", "line 4, column 9: yes -> write 'yes' (the text) or true (the boolean, as read before)"),
        ("grid:\n  tag: [On]\n", "line 4, column 9: On -> write 'On' (the text) or true (the boolean, as read before)"),
        ("grid:\n  x: [12:30]\n", "line 4, column 7: 12:30 -> write '12:30' (the text) or 750 (the number, as read before)"),
        ("grid:\n  x: [1_000]\n", "1_000 -> write '1_000' (the text) or 1000 (the number, as read before)"),
        ("grid:\n  x: [0755]\n", "0755 -> write '0755' (the text) or 493 (the number, as read before) or 755 (the number)"),
        ("grid:\n  x: [012]\n", "012 -> write '012' (the text) or 10 (the number, as read before) or 12 (the number)"),
        ("grid:\n  x: [0o17]\n", "0o17 -> write '0o17' (the text, as read before) or 15 (the number)"),
        ("parameters:\n  on: 1\ngrid:\n  x: [1]\n", "line 4, column 3: on -> write 'on' (the text) or true"),
    ],
)
def test_a_value_yaml_11_and_12_read_differently_is_refused_with_its_line_and_spellings(workdir, capsys, body, line):
    path = _write(workdir, body)
    with pytest.raises(SweepError) as e:
        sweep.load_sweep(path)
    assert line in str(e.value), str(e.value)
    assert str(e.value).startswith(f"{path}: this value is read differently by YAML 1.1")
    assert main(["sweep", str(path), "--dry-run"]) == 2  # one error, nothing listed, nothing run
    err = capsys.readouterr().err
    assert line in err and "Traceback" not in err, err
    assert not (workdir / "runs").exists()


def test_every_such_value_of_a_file_is_named_in_one_error(workdir):
    path = _write(workdir, "grid:\n  tag: [no, yes]\n  x: [12:30]\n")
    with pytest.raises(SweepError, match="3 values are read differently") as e:
        sweep.load_sweep(path)
    assert [line.split(":")[0] for line in str(e.value).splitlines()[1:]] == [
        "  line 4, column 9", "  line 4, column 13", "  line 5, column 7"]  # fmt: skip


def test_quoted_values_and_true_false_read_as_written(workdir):
    path = _write(workdir, """\
        parameters:
          sleep_s: 1e-3
        grid:
          tag: ['no', "yes", y, n, '12:30', 2024-01-01, !!str off]
          x: [1, 0x10, -2]
        """)
    config = sweep.load_sweep(path)
    assert config.grid == {"tag": ["no", "yes", "y", "n", "12:30", "2024-01-01", "off"], "x": [1, 16, -2]}
    assert config.parameters == {"sleep_s": 0.001}
    assert sweep.load_sweep(_write(workdir, "grid:\n  tag: [true, False]\n", "b")).grid == {"tag": [True, False]}


def test_run_ids_of_a_file_without_such_values_are_the_ones_earlier_versions_made(workdir):
    """Resuming a sweep made before: every value type, the ids as the YAML 1.1 reader made them."""
    path = _write(workdir, """\
        parameters:
          sleep_s: 1e-3
          tag: 2024-01-01
          output_dir_x: ~
        grid:
          x: [1, -2, 0x10, 0, 750]
          fail_on: [.inf, 0.5, null]
          flags: [true, false, y, n, "no", text with spaces, [1, 2], {a: b}]
        """, "golden")
    ids = [r.run_id for r in sweep.plan(sweep.load_sweep(path), fingerprint="f")]
    assert ids[0] == "fail_on=0.5,flags=1-2,x=0,a0f74df8" and len(ids) == 120
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] == "8b43fd1d9d29be20"
    # 12:30 and yes, refused now, are resumed by writing them as they were read: 750 and true.
    resumed = _write(workdir, "grid:\n  x: [750]\n  flags: [true]\n", "golden")
    assert [r.run_id for r in sweep.plan(sweep.load_sweep(resumed), fingerprint="f")] == ["flags=true,x=750,83fcd884"]


@pytest.mark.parametrize(
    "grid, message",
    [
        # quoted text that YAML 1.2 reads as text unquoted too: quotes are not the fix
        ('x: [1, "yes"]', "grid.x = 'yes' is text, but nb.ipynb declares x: int; give a whole number"),
        ("x: [1, '12:30']", "grid.x = '12:30' is text, but nb.ipynb declares x: int; give a whole number"),
        ("x: [1, '8']", "grid.x = '8' is text, but nb.ipynb declares x: int; write 8 without quotes"),
        ("tag: [a, true]", "grid.tag = True is true or false, but nb.ipynb declares tag: str; quote it: 'true'"),
    ],
)
def test_a_type_error_suggests_the_fix_yaml_12_reads_right(workdir, capsys, grid, message):
    path = _write(workdir, f"grid:\n  {grid}\n")
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "grid, message",
    [
        ("flag: ['no']", "grid.flag = 'no' is text, but nb.ipynb sets flag = True (true or false); give true or false "
                         "(or annotate flag in its parameters cell to take other values)"),
        ("lr: [0.5, fast]", "grid.lr = 'fast' is text, but nb.ipynb sets lr = 1 (a number); give a number"),
        ("name: [a, 3]", "grid.name = 3 is a whole number, but nb.ipynb sets name = 'x' (text); quote it: '3'"),
    ],
)
def test_a_parameter_without_annotation_is_checked_against_its_literal_default(tmp_path, monkeypatch, capsys, grid, message):
    """Notebooks of other projects often have no annotations: `flag = True` swept with 'no' (the
    quoted text the YAML 1.2 message offers) reached the notebook as truthy text."""
    import nbformat

    monkeypatch.chdir(tmp_path)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("flag = True\nlr = 1\nname = 'x'\nanything = None\nexpr = 2 * 3")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(flag, lr, name)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    path = _write(tmp_path, f"grid:\n  {grid}\n")
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    ok = _write(tmp_path, "parameters:\n  anything: [1]\n  expr: text\ngrid:\n  flag: [false]\n  lr: [0.5, 2]\n", "ok")
    assert main(["sweep", str(ok), "--dry-run"]) == 0, capsys.readouterr().err  # None or an expression: anything


def test_merge_keys_share_values_and_may_be_overridden(workdir):
    """`<<: *defaults` crashed the duplicate-key check ('could not determine a constructor for the tag merge')."""
    merged = _write(workdir, "parameters:\n  <<: {sleep_s: 0.5, tag: a}\n  tag: b\ngrid:\n  x: [1]\n", "m")
    assert sweep.load_sweep(merged).parameters == {"sleep_s": 0.5, "tag": "b"}
    twice = _write(workdir, "parameters:\n  <<: {sleep_s: 0.5}\n  tag: b\n  tag: c\ngrid:\n  x: [1]\n", "d")
    with pytest.raises(SweepError, match=r"key 'tag' appears twice \(line 5 and line 6\)"):
        sweep.load_sweep(twice)


@pytest.mark.parametrize(
    "body, message",
    [
        # a typo'd parameter: the declared list was all there was to go on (19 names for notebook 02)
        ("parameters:\n  sleep: 1\ngrid:\n  fail_onn: [1]\n",
         "has no parameter(s) fail_onn, sleep in its `parameters` cell (it declares: fail_on, output_dir, sleep_s, tag, "
         "wandb_group, wandb_id, wandb_tags, x); did you mean fail_on for fail_onn, sleep_s for sleep? fix the sweep file"),
        # a typo'd top-level key
        ("grids:\n  x: [1]\n", "unknown SweepConfig field(s): grids (known: "),
        ("grids:\n  x: [1]\n", "; did you mean grid?"),
        # an empty or null grid entry: the fix offered was `x: [[]]` and `x: [None]`
        ("grid:\n  x: []\n", "grid.x has no values: give one or more in brackets, e.g. x: [1, 2]"),
        ("grid:\n  x:\n", "grid.x has no values: give one or more in brackets, e.g. x: [1, 2]"),
    ],
)
def test_a_misspelt_or_empty_entry_is_named_with_the_fix(workdir, capsys, body, message):
    path = _write(workdir, body)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_dry_run_lists_the_runs_in_the_grids_numeric_order(workdir, capsys):
    """--dry-run listed runs by id as text (x=16 before x=4), unlike summary.md's table."""
    path = _write(workdir, "grid:\n  x: [4, 16, 8]\n  tag: [b, a]\n")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    listed = [line.split()[1].rsplit(",", 1)[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  pending")]
    assert listed == [f"tag={t},x={x}" for x in (4, 8, 16) for t in ("a", "b")]


def test_a_sweep_runs_its_runs_in_the_order_dry_run_lists_them(workdir, capsys):
    """The cron log's [1/3] [2/3] lines followed the run ids as text (x=16 before x=4), not the order
    --dry-run and summary.md list the same runs in."""
    path = _write(workdir, "grid:\n  x: [4, 16, 8]\n")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("  pending")]
    assert main(["sweep", str(path), "--jobs", "1"]) == 0
    started = [line.split("started ", 1)[1].strip() for line in capsys.readouterr().err.splitlines() if " started " in line]
    assert started == listed and [s.split(",")[0] for s in started] == ["x=4", "x=8", "x=16"], started
