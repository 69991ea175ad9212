"""Recognising a data file that is not JSONL (a JSON array, pretty-printed JSON, CSV or TSV), to say what it is
and give the command that converts it: the error a researcher bringing an export from elsewhere sees first; and a
line that is no JSON object (a comment, a broken line, a key given twice), shown with its fix; and how a line's
values read (missing, blank, a reference or a list of them, meta)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from vlm_lab.errors import DataError

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


def missing(value: object) -> bool:
    """None, or NaN: json.dumps writes a pandas export's missing values as NaN, which json reads as a float."""
    return value is None or (isinstance(value, float) and value != value)


def blank(value: object) -> bool:
    """Missing (``missing``), or a string that is empty or only whitespace (a number, even 0, is not blank)."""
    return missing(value) or (isinstance(value, str) and not value.strip())


def scalar(value: object) -> bool:
    """A string or a number (not a bool: JSON's true is no answer)."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


class WrittenNumber(float):
    """A number a float cannot hold (``Infinity``, ``-Infinity``, ``1e400``) that remembers how it was written:
    a float still (a meta value to break down by), that reads as its text (``as_text``), not as ``inf``."""

    text: str

    def __new__(cls, text: str) -> WrittenNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def json_number(text: str) -> float:
    """``json.loads``' ``parse_float`` and ``parse_constant``: the float, or for one it cannot hold a ``WrittenNumber``.
    ``NaN`` stays a plain NaN: pandas' missing value (``missing``)."""
    number = float(text)
    return number if number != number or abs(number) < float("inf") else WrittenNumber(text)


def as_text(value: str | int | float) -> str:
    """A string, or a number as written: a whole float as an integer (pandas writes an integer column that has a missing
    value as floats: the answer 2 arrives as 2.0, which "2" never matched), one json cannot hold as its text
    (``Infinity``, not ``inf``)."""
    if isinstance(value, WrittenNumber):
        return value.text
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def reference_field(value: object, where: str) -> str | list[str] | None:
    """A line's ``reference`` as a sample holds it: None when missing or blank, a string, or the
    list of acceptable answers without its blank entries (a list of blanks only, or ``[]``, is none:
    that sample is compared but not scored); numbers become strings, as a single reference does."""
    if not isinstance(value, list):
        return None if blank(value) else as_text(value)
    wrong = [(i, v) for i, v in enumerate(value) if v is not None and not scalar(v)]
    if wrong:
        i, v = wrong[0]
        raise DataError(f"{where}: reference[{i}] is a {type(v).__name__} ({json.dumps(v)[:60]}); a list of references "
                        'holds the acceptable answers as strings, e.g. "reference": ["two", "2"]')
    answers = [as_text(v) for v in value if not blank(v)]
    return answers or None


def meta_field(value: object, where: str) -> dict[str, str | int | float | bool] | None:
    """A line's ``meta``: an object of named strings, numbers or booleans (None when missing or ``{}``)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DataError(f'{where}: meta is a {type(value).__name__} ({json.dumps(value)[:60]}); meta is an object of '
                        'named values, e.g. "meta": {"answer_type": "number"}')
    value = {k: v for k, v in value.items() if not missing(v)}
    wrong = [k for k, v in value.items() if not isinstance(v, (str, int, float, bool))]
    if wrong:
        v = value[wrong[0]]
        raise DataError(f"{where}: meta[{wrong[0]!r}] is a {type(v).__name__} ({json.dumps(v)[:60]}); meta values are strings, "
                        "numbers or booleans (accuracy is broken down by each distinct value)")
    return value or None
