"""Recognising a data file that is not JSONL (a JSON array, pretty-printed JSON, CSV or TSV), to say what it is
and give the command that converts it: the error a researcher bringing an export from elsewhere sees first; and a
line that is no JSON object (a comment, a broken line, a key given twice), shown with its fix."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

# written out as the fix: pandas is installed with vlm_lab; every value read as written (ids, "" for no reference),
# and columns other than the four JSONL keys nested under "meta", where vlm-lab takes them
_PANDAS = ("python -c \"import pandas as pd; d = pd.read_csv({src!r}{sep}, dtype=str, keep_default_na=False); "
           "k = [c for c in ('id', 'image', 'prompt', 'reference') if c in d]; d[k].assign(meta=d.drop(columns=k)"
           ".to_dict('records')).to_json({dst!r}, orient='records', lines=True, force_ascii=False)\"")


class RepeatedKeyError(ValueError):
    """A JSON object that gives one key twice (``unique_keys``); the message names the key and its values."""


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``' ``object_pairs_hook``: the object, or ``RepeatedKeyError`` for a key given twice (json keeps the
    last one silently: a line with two prompts would be asked the second without a word)."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            shown = ", ".join(repr(v)[:40] for v in (seen[key], value))
            raise RepeatedKeyError(f"key {key!r} is given twice ({shown}); keep one")
        seen[key] = value
    return seen


def not_json(path: Path, lineno: int, line: str, error: json.JSONDecodeError, first_line: str) -> str:
    """The error for a line that is no JSON: a comment, a file of another format (``not_jsonl``), or a broken
    line shown with where it breaks. ``first_line``: the file's first non-blank line."""
    shown = line.strip()
    shown = repr(shown if len(shown) <= 80 else shown[:77] + "...")
    if line.lstrip().startswith(("#", "//")):  # before not_jsonl: "# id, image" would pass for a CSV header
        return f"{path}:{lineno}: {shown} is a comment, which JSONL has no way to write: delete the line"
    return not_jsonl(path, first_line) or (f"{path}:{lineno}: not valid JSON ({error.msg} at column {error.colno}: {shown}); "
                                           'each line is one JSON object, e.g. {"image": "a.png", "prompt": "What is it?"}')


def not_jsonl(path: Path, first_line: str) -> str | None:
    """What ``path`` is instead of JSONL, with the command that converts it, or None when it is none of these
    (a JSONL file with a broken line: the caller names that line). ``first_line``: the file's first non-blank line."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    shown = _converted_name(path)
    separator = _table_separator(path, first_line)
    if separator:
        kind = "TSV" if separator == "\t" else "CSV"
        sep = ", sep='\\t'" if separator == "\t" else ""
        command = _PANDAS.format(src=str(path), sep=sep, dst=str(shown))
        return (f"{path} is {kind}, not JSONL (one JSON object per line, as vlm-lab reads it); convert it (columns "
                f"image, prompt, reference, id; any others go under \"meta\"): {command}")  # fmt: skip
    what = _json_document(text)
    if what is None:
        return None
    jq = "'.[]'" if what.startswith("an array") else "."
    return (f"{path} is one JSON document ({what}), not JSONL: write one object per line, e.g. "
            f"jq -c {jq} {shlex.quote(str(path))} > {shlex.quote(str(shown))}")


def _converted_name(path: Path) -> Path:
    return path.with_suffix(".jsonl") if path.suffix.lower() != ".jsonl" else path.with_name(f"{path.stem}-lines.jsonl")


def _table_separator(path: Path, first_line: str) -> str | None:
    """``","`` or ``"\\t"`` for a CSV or TSV (by its name, or a header line that is no JSON), else None."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "\t" if suffix == ".tsv" else ","
    head = first_line.strip()
    if head.startswith(("{", "[")):
        return None
    return "\t" if "\t" in head else "," if "," in head else None


def _json_document(text: str) -> str | None:
    """``"an array"`` / ``"an object over 4 lines"`` / ``"3 objects over 12 lines"`` for JSON written other than
    one object a line, or None when the text is not JSON values back to back."""
    decoder, values, at = json.JSONDecoder(), [], 0
    try:
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at == len(text):
                break
            value, at = decoder.raw_decode(text, at)
            values.append(value)
    except json.JSONDecodeError:
        return None
    if len(values) == 1 and isinstance(values[0], list):
        return "an array"
    if not values or not all(isinstance(v, dict) for v in values):
        return None
    lines = len(text.strip().splitlines())
    return f"an object over {lines} lines" if len(values) == 1 else f"{len(values)} objects over {lines} lines"
