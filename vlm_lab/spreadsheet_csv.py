"""CSV files meant for spreadsheets (results.csv, a sweep's summary.csv), guarded against formula injection.

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a formula when Excel,
LibreOffice or Google Sheets opens the CSV (OWASP, "CSV Injection"), and these files hold text no one vetted: a
model's answer, a user's prompt or reference, a sweep's parameters. The policy (OWASP's):

- such a text cell is written with a single quote before it (``=HYPERLINK(...)`` -> ``'=HYPERLINK(...)``), which
  a spreadsheet shows as text;
- a text cell that already starts with quotes before one of those characters gets one more (``'=x`` -> ``''=x``),
  so reading back is exact;
- numbers are never touched: numeric columns, and text that is one plain number (an answer ``-3``, ``-0.5``,
  which a spreadsheet reads as that number, not as a formula);
- the header (a checkpoint's name in ``<checkpoint>/output``) is guarded as the cells are;
- lines end in CRLF, so a cell holding a CR or LF anywhere is quoted and stays one cell.

The exact text stays in results.jsonl / summary.json; ``read_csv`` here reads a guarded CSV back with pandas
and removes the guard, so ``read_csv(results.csv)`` equals what ``to_dataframe`` wrote (a plain ``pd.read_csv``
shows the quotes).
"""

from __future__ import annotations

import os
import re
from typing import Any

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _formula_like(text: str) -> bool:
    core = text.lstrip(GUARD)
    return core.startswith(TRIGGERS) and not _NUMBER.fullmatch(core)


def guard_cell(value: Any) -> Any:
    """``value`` as a spreadsheet-safe CSV cell: text a spreadsheet would run as a formula with a quote before it."""
    return GUARD + value if isinstance(value, str) and _formula_like(value) else value


def unguard_cell(value: Any) -> Any:
    """``guard_cell``'s inverse: the text as it was before the guard."""
    return value[1:] if isinstance(value, str) and value.startswith(GUARD) and _formula_like(value) else value


def _map_text(frame: Any, cell: Any) -> Any:
    import pandas as pd

    frame = frame.rename(columns=cell)
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
            frame[column] = frame[column].map(cell, na_action="ignore")
    return frame


def to_csv(frame: Any) -> str:
    """``frame`` (a pandas DataFrame) as CSV text for spreadsheets, without its index, formula-like text guarded.

    Lines end in CRLF (RFC 4180): the csv writer quotes a cell holding a character of the line end only, and a
    bare CR in an answer (``"ok\\r=cmd"``) left unquoted starts a new row in a spreadsheet, with a formula first."""
    return _map_text(frame, guard_cell).to_csv(index=False, lineterminator="\r\n")


def read_csv(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A CSV ``to_csv`` wrote, as a pandas DataFrame with the guard removed (``pd.read_csv``'s options apply)."""
    import pandas as pd

    return _map_text(pd.read_csv(path, **kwargs), unguard_cell)
