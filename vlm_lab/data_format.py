"""Recognising a data file that is not JSONL (a JSON array, pretty-printed JSON, CSV or TSV), to say what it is
and give the command that converts it: the error a researcher bringing an export from elsewhere sees first."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

# written out as the fix: pandas is installed with vlm_lab; every value read as written (ids, "" for no reference),
# and columns other than the four JSONL keys nested under "meta", where vlm-lab takes them
_PANDAS = ("python -c \"import pandas as pd; d = pd.read_csv({src!r}{sep}, dtype=str, keep_default_na=False); "
           "k = [c for c in ('id', 'image', 'prompt', 'reference') if c in d]; d[k].assign(meta=d.drop(columns=k)"
           ".to_dict('records')).to_json({dst!r}, orient='records', lines=True, force_ascii=False)\"")


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
