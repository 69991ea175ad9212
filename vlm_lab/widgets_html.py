"""The explorer's HTML: the results table, one-line messages, a run under its label, and the
colours they use in light and dark themes (``vlm_lab.widgets`` shows them)."""

from __future__ import annotations

import dataclasses
import html
from typing import Any, Sequence

# Text with no place to break (a '!!!!' NaN answer, a URL, a long path) wraps anywhere: it widened the table
# past the output area, whose latency, tokens and memory columns were then cut off unseen.
# Colours by class, with a dark set under JupyterLab's and VS Code's dark themes: fixed light
# backgrounds under a dark theme's white text (and grey or dark red text on its dark background)
# could not be read.
STYLE = """<style>
.vlm-lab-ok{background:#e6f4ea}.vlm-lab-bad{background:#fce8e6}
.vlm-lab-results td,.vlm-lab-message,.vlm-lab-run,.vlm-lab-earlier summary{overflow-wrap:anywhere}
.vlm-lab-error{color:#b3261e}.vlm-lab-warn{color:#8a5a00}.vlm-lab-note{color:#444}
body[data-jp-theme-light=false] .vlm-lab-ok,body.vscode-dark .vlm-lab-ok{background:#1e3d2a}
body[data-jp-theme-light=false] .vlm-lab-bad,body.vscode-dark .vlm-lab-bad{background:#4a2320}
body[data-jp-theme-light=false] .vlm-lab-error,body.vscode-dark .vlm-lab-error{color:#ff8a80}
body[data-jp-theme-light=false] .vlm-lab-warn,body.vscode-dark .vlm-lab-warn{color:#ffc266}
body[data-jp-theme-light=false] .vlm-lab-note,body.vscode-dark .vlm-lab-note{color:#c8c8c8}
</style>"""


def message_html(text: str, *, error: bool = False, warn: bool = False) -> str:
    """A one-line notice for the output area (errors in red, never a traceback; warnings in amber)."""
    kind = "vlm-lab-error" if error else "vlm-lab-warn" if warn else "vlm-lab-note"
    return f'<div class="vlm-lab-message {kind}" style="padding:4px 0">{html.escape(text)}</div>'


def _badges(row: dict[str, Any]) -> str:
    """NaN/inf scores (noise) and cut off at max_new_tokens or the checkpoint's context (incomplete), beside the answer."""
    from vlm_lab.compare import nonfinite_message

    out = ""
    if row.get("nonfinite"):
        # the advice follows the dtype the model runs in (float16 overflow vs broken weights)
        advice = nonfinite_message(row["checkpoint"], 1, 1, row.get("dtype", "?"), dtype_option="dtype='{}'")
        out += f" <span class='vlm-lab-error'>NaN/inf: {html.escape(advice)}</span>"
    if row.get("at_context"):  # more tokens cannot help: the image, prompt and answer fill what the checkpoint reads
        out += " <span class='vlm-lab-warn'>cut off: the checkpoint reads no further (shorten the prompt)</span>"
    elif row.get("truncated"):
        out += " <span class='vlm-lab-warn'>cut off at max new tokens: raise it to see the whole answer</span>"
    return out


def _name_html(name: str) -> str:
    """A checkpoint's name whose folders wrap (after a '/', or anywhere in a long run's name) and whose own last part
    (``checkpoint-1000``) stays whole: a long name kept whole took the answer's room or pushed memory out of sight."""
    folders, _, last = name.rpartition("/")
    return (html.escape(folders) + "/<wbr>" if folders else "") + f"<span style='white-space:nowrap'>{html.escape(last)}</span>"


def results_html(rows: Sequence[dict[str, Any]], reference: str | list[str] | None = None) -> str:
    """The side-by-side table of ``compare_one`` rows; green/red against the reference (or any of a list) when known."""
    from vlm_lab.units import format_bytes
    from vlm_lab.results import reference_text
    from vlm_lab.results_html import MEMORY_WORDS
    from vlm_lab.scoring import normalized_match

    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{h}</th>" for h in ("checkpoint", "answer", "latency", "tokens", "memory"))
    body = []
    for r in rows:
        kind = ""
        if r.get("error"):  # this checkpoint failed; the others' answers stay
            kind = " vlm-lab-bad"
            cells = (_name_html(r["checkpoint"]), f"<span class='vlm-lab-error'>{html.escape(r['error'])}</span>", "-", "-", "-")
        else:
            if reference is not None:
                kind = " vlm-lab-ok" if normalized_match(r["text"], reference) else " vlm-lab-bad"
            cells = (
                _name_html(r["checkpoint"]),
                f"<b>{html.escape(r['text']) or '<i>(empty)</i>'}</b>" + _badges(r),
                f"{r['latency_s'] * 1000:.0f} ms",
                str(r["new_tokens"]),
                f"{format_bytes(r['memory_bytes'])} {MEMORY_WORDS.get(r['memory_kind'], r['memory_kind'])}",
            )
        # the answer and a name's folders wrap; the numbers and a name's last part stay whole (a long cut-off note
        # squeezed "checkpoint-\n1000")
        tds = "".join(f"<td style='padding:2px 10px{'' if i < 2 else ';white-space:nowrap'}'>{c}</td>" for i, c in enumerate(cells))
        body.append(f"<tr class='vlm-lab-row{kind}'>{tds}</tr>")
    ref = f"<div>reference: <b>{html.escape(reference_text(reference))}</b></div>" if reference is not None else ""
    return f"{STYLE}{ref}<table class='vlm-lab-results'><tr>{head}</tr>{''.join(body)}</table>"


@dataclasses.dataclass
class Run:
    """One Compare: what it asked (``label``: prompt, image, strategy, max tokens), its rows, the
    reference they were judged against, and a note when it did not finish: stopped (amber) or
    ``failed`` (red)."""

    label: str
    rows: list[dict[str, Any]]
    reference: str | list[str] | None = None
    note: str = ""
    failed: bool = False

    def html(self, *, label: bool = True) -> str:
        head = f"<div class='vlm-lab-run'><b>{html.escape(self.label)}</b></div>" if label else ""
        note = message_html(self.note, error=self.failed, warn=not self.failed) if self.note else ""
        return f"{head}{note}{results_html(self.rows, self.reference)}"
