"""The side-by-side HTML view of a ``ComparisonResult``: in a notebook and as comparison.html.

A readable summary first (accuracy with its 95% CI, the change against the checkpoint
before with its paired CI, coloured when the CI excludes 0, flipped samples, latency,
tokens/s, memory (a CUDA peak, or on CPU the weights), flags), then one row per sample: thumbnail, prompt, reference
and each checkpoint's output, green when right (score 1), red after a cross when wrong (0: not colour alone), amber with
its value when partly right (VQA accuracy: "0.6" for 2 of 10 humans), and the rows where
checkpoints disagree highlighted, with a no-script "show only these" toggle. A cell a checkpoint
got wrong that the one before got right is marked "was right", with a toggle for those rows alone
(with checkpoint-0 in the comparison every row disagrees). A long answer (or prompt, or reference) shows its
first 4 lines, with a no-script "whole text" checkbox; print shows every text whole. Without references there
is no score column, only a line on what to add. The summary, where it is wider than the window, scrolls
sideways with a shade on the edge that has more beyond it. The samples scroll in their own box, column names on top;
dark colours follow JupyterLab's and VS Code's dark themes. The exact numbers are in
summary.json and ``result.summary_frame()``; here they are rounded for reading.
"""

from __future__ import annotations

import base64
import html as html_lib
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_lab.errors import DataError
from vlm_lab.results import reference_text
from vlm_lab.scoring import METRIC_LABELS, is_right, is_wrong

if TYPE_CHECKING:
    from vlm_lab.results import ComparisonResult

MEMORY_WORDS = {"cpu_weights": "weights", "cuda_max_allocated": "peak CUDA"}  # beside the number: what it counts
MEMORY_KINDS = {
    "cuda_max_allocated": "peak CUDA memory allocated while generating (weights, activations, KV cache)",
    "cpu_weights": "the weights' bytes (on CPU one process's peak cannot be pinned on one model: vlm-lab memory measures it)",
}
# embedded thumbnails (shown 48 px wide; twice that for a sharp one on a high-density screen): a file past
# THUMBNAIL_BYTES is scaled down, a shapes PNG (~200 bytes) or a small scan goes in as it is
THUMBNAIL_PX, THUMBNAIL_BYTES = 96, 32_000
FOLD_CHARS = 240  # a longer text (a 512-token description) starts folded to 4 lines (STYLE's line-clamp), with a toggle
FOLD_LINES = 4  # so does one of more lines than that, however short (a list of 10 items)
LONG_WORD = 24  # letters: a longer word may break anywhere (hyphens and spaces break as usual)
NO_REFERENCES = ('no sample has a reference: nothing is scored (add "reference" to each line of the data for accuracy, '
                 "its confidence interval and the samples each checkpoint got right or wrong)")
OPEN_BREAKDOWN_VALUES = 12  # an accuracy-by-meta table with more values starts folded
# samples in the saved comparison.html, the disagreements first: 20k rows made a 5 MB page that took Chromium 2.5 s to
# open and 2.8 s to redraw after "show only these" (100k: 26 MB); results.jsonl and results.csv keep every sample
PAGE_ROWS = 5000
STYLE = """
.vlm-lab-comparison{--vlm-lab-page:#fff;--vlm-lab-shade:rgba(0,0,0,.3);--vlm-lab-edges:
 linear-gradient(to right,var(--vlm-lab-page) 30%,transparent) left/32px 100% no-repeat local,
 linear-gradient(to left,var(--vlm-lab-page) 30%,transparent) right/32px 100% no-repeat local,
 radial-gradient(farthest-side at 0 50%,var(--vlm-lab-shade),transparent) left/14px 100% no-repeat scroll,
 radial-gradient(farthest-side at 100% 50%,var(--vlm-lab-shade),transparent) right/14px 100% no-repeat scroll;
 font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:14px;color:#1f2328}
.vlm-lab-comparison table{border-collapse:collapse;margin:6px 0 12px}
.vlm-lab-comparison td,.vlm-lab-comparison th{padding:4px 8px;text-align:left;vertical-align:middle;border-bottom:1px solid #e3e6ea}
.vlm-lab-comparison th{background:#f3f5f7;font-weight:600}
.vlm-lab-comparison table.summary td.num,.vlm-lab-comparison table.breakdown td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.vlm-lab-comparison .ci{color:#667085;font-size:85%}
.vlm-lab-comparison .up{color:#16703a;font-weight:600}.vlm-lab-comparison .down{color:#b3261e;font-weight:600}
.vlm-lab-comparison .settings{color:#667085;margin:2px 0 6px}.vlm-lab-comparison .capped{font-weight:600}
.vlm-lab-comparison tr.disagree{background:#fff3c4}
.vlm-lab-comparison td.ok{color:#16703a}.vlm-lab-comparison td.bad{color:#b3261e}.vlm-lab-comparison td.partial{color:#8a5a00}
.vlm-lab-comparison td.bad::before{content:'\\2717\\00a0';font-weight:600}
.vlm-lab-comparison .score{font-size:80%;font-variant-numeric:tabular-nums}
.vlm-lab-comparison .empty{color:#5f6b7a;font-style:italic}
.vlm-lab-comparison .nonfinite,.vlm-lab-comparison .truncated{color:#fff;padding:0 4px;border-radius:3px;font-size:80%;white-space:nowrap}
.vlm-lab-comparison .nonfinite{background:#b3261e}.vlm-lab-comparison .truncated{background:#8a5a00}
.vlm-lab-comparison img{width:48px;height:48px;object-fit:contain;background:#fff;image-rendering:pixelated}
.vlm-lab-comparison pre.paired{white-space:pre-wrap;font-size:85%;margin:4px 0 0}
.vlm-lab-comparison:has(input.only-disagree:checked) table.samples tbody tr:not(.disagree){display:none}
.vlm-lab-comparison:has(input.only-regressions:checked) table.samples tbody tr:not(:has(.flip.down)){display:none}
.vlm-lab-comparison .flip{font-size:80%;white-space:nowrap}.vlm-lab-comparison .flip.up{color:#16703a}
.vlm-lab-comparison .flip.down{color:#fff;background:#b3261e;padding:0 4px;border-radius:3px}
.vlm-lab-comparison td:has(>.flip.down){box-shadow:inset 0 0 0 2px #b3261e}
.vlm-lab-comparison div.wide{overflow-x:auto;max-width:100%;background:var(--vlm-lab-edges)}
.vlm-lab-comparison div.wide th{background:rgba(0,30,60,.045)}
.vlm-lab-comparison .lines{white-space:pre-line}.vlm-lab-comparison .long-word{overflow-wrap:anywhere}.vlm-lab-comparison td.id,.vlm-lab-comparison table.summary td:first-child{white-space:nowrap}
.vlm-lab-comparison div.samples{overflow:auto;max-height:calc(100vh - 24px)}
.vlm-lab-comparison .folded{display:-webkit-box;-webkit-box-orient:vertical;-webkit-line-clamp:4;line-clamp:4;overflow:hidden}
.vlm-lab-comparison tr:has(label.unfold>input:checked)>td{vertical-align:top}
.vlm-lab-comparison td:has(>label.unfold>input:checked)>.folded{display:block;-webkit-line-clamp:none;line-clamp:none;overflow:visible}
.vlm-lab-comparison label.unfold{font-size:80%;color:#5f6b7a;white-space:nowrap;cursor:pointer}
@media print{.vlm-lab-comparison div.samples{overflow:visible;max-height:none}
.vlm-lab-comparison .folded{display:block;-webkit-line-clamp:none;line-clamp:none;overflow:visible}.vlm-lab-comparison label.unfold{display:none}
.vlm-lab-comparison tr:has(.folded)>td{vertical-align:top}}
.vlm-lab-comparison table.samples{margin:0}.vlm-lab-comparison table.samples thead th{position:sticky;top:0;z-index:1}
"""
# Under JupyterLab's and VS Code's dark themes (as widgets_html's STYLE): dark text on the theme's dark
# background, and the light rows and headers under its light text, could not be read.
DARK = """
{c}{{color:#e6edf3}} {c} td,{c} th{{border-bottom-color:#444c56}} {c} th{{background:#2d333b}}
{c} div.wide th{{background:rgba(157,187,227,.2)}} {c} tr.disagree{{background:#3b3218}}
{c} .ci,{c} .settings,{c} label.unfold{{color:#a8b3bf}} {c} .empty{{color:#a8b3bf}}
{c} .up,{c} td.ok,{c} .flip.up{{color:#6bdc7f}} {c} .down,{c} td.bad{{color:#ff9b94}} {c} td.partial{{color:#f0c060}}
{c} td:has(>.flip.down){{box-shadow:inset 0 0 0 2px #ff9b94}} {c} .flip.down{{color:#fff}}
"""
# the summary's scroll hint: a light shade under the page's own colour (the theme's, as the output area shows it)
PAGE = {"body[data-jp-theme-light=false]": "var(--jp-layout-color0,#111)", "body.vscode-dark": "var(--vscode-editor-background,#1f1f1f)"}
STYLE += "".join(DARK.format(c=f"{theme} .vlm-lab-comparison") + f"{theme} .vlm-lab-comparison{{--vlm-lab-page:{page};"
                 "--vlm-lab-shade:rgba(255,255,255,.35)}" for theme, page in PAGE.items())


def comparison_html(result: ComparisonResult, *, max_rows: int | None = 200, only_disagreements: bool = False,
                    embed_images: bool = True, disagreements_first: bool = False) -> str:  # fmt: skip
    """The view as an HTML fragment (see ``ComparisonResult.html``).

    ``disagreements_first``: past ``max_rows``, show the samples a checkpoint got wrong that the one before got right,
    then the other disagreements, then the rest (each in the data's order, shown in it), under a note that says so."""
    disagree = {id(r) for r in result.disagreements()}
    scored = has_references(result)  # else no reference column, no accuracy
    flips = flipped_cells(result)
    regressed = {sample for (sample, _), up in flips.items() if not up}
    rows = [r for r in result.rows if id(r) in disagree] if only_disagreements else result.rows
    capped = ""
    if max_rows is not None and disagreements_first and len(rows) > max_rows:
        shown, capped = _disagreements_first(rows, disagree, regressed, max_rows)
    else:
        shown = rows if max_rows is None else rows[:max_rows]
    head = "".join(f"<th class='{long_word(n).strip()}'>{esc(n)}</th>" for n in result.checkpoints)
    body = []
    for row in shown:
        cells = []
        for i, name in enumerate(result.checkpoints):
            out = row["outputs"][name]
            mark, value = score_mark(out["score"])
            text = esc(out["output"]) if out["output"] else '<span class="empty">(empty)</span>'
            flip = flip_mark(flips.get((row["id"], name)), result.checkpoints[i - 1] if i else "")
            text, toggle = fold(out["output"], text)
            cells.append(f'<td class="{mark}{long_word(out["output"])}">{text}{value}{flip}{badges(out)}{toggle}</td>')
        cls = ' class="disagree"' if id(row) in disagree else ""
        ref = "" if row["reference"] is None else reference_text(row["reference"])
        thumb = thumbnail(result, row) if embed_images else f'<img src="{esc(row["image"])}"{named(row)} loading="lazy">'
        texts = _td(row["id"], long_word(row["id"]) or " id") + "".join(_td(t, long_word(t)) for t in (row["prompt"], *((ref,) if scored else ())))
        body.append(f"<tr{cls}><td>{thumb}</td>{texts}{''.join(cells)}</tr>")
    more = "" if len(shown) == len(rows) or capped else f"<p>showing {len(shown)} of {len(rows)} samples</p>"
    flipped, reference = "", "<th>reference</th>" if scored else ""
    if len(result.checkpoints) > 1 and scored:
        flipped = f"<details><summary>flipped samples</summary><pre class='paired'>{esc(result.paired_report())}</pre></details>"
    return (
        f"<div class='vlm-lab-comparison'><style>{STYLE}</style>"
        f"<p class='settings'>{esc(settings_line(result))}</p><div class='wide'>{summary_table(result)}</div>"
        f"{breakdown_tables(result)}{flipped}{capped}<p class='filters'>{filters(len(disagree), len(result.rows), regressed)}</p>"
        f"<div class='samples'><table class='samples'><thead><tr><th>image</th><th>id</th><th>prompt</th>{reference}{head}</tr>"
        f"</thead><tbody>{''.join(body)}</tbody></table></div>{more}</div>"
    )


def _disagreements_first(rows: list[dict], disagree: set[int], regressed: set[str], max_rows: int) -> tuple[list[dict], str]:
    """``max_rows`` of ``rows`` (regressions, other disagreements, the rest), in the data's order, and the note saying so."""
    ranked = sorted(range(len(rows)), key=lambda i: (rows[i]["id"] not in regressed, id(rows[i]) not in disagree))  # stable
    chosen = sorted(ranked[:max_rows])
    n_disagree = sum(id(r) in disagree for r in rows)
    if n_disagree <= max_rows:
        which = f"all {n_disagree} where the checkpoints disagree, then the first {max_rows - n_disagree} others"
    else:
        which = (f"{max_rows} of the {n_disagree} where the checkpoints disagree, those where a checkpoint got wrong "
                 "what the one before got right first")
    note = (f"This page shows {max_rows} of {len(rows)} samples: {which}, in the data's order. Every sample is in "
            "results.jsonl and results.csv beside this page (ComparisonResult.load(DIR).page(all_rows=True) makes a page of them all).")
    return [rows[i] for i in chosen], f"<p class='capped'>{esc(note)}</p>"


def _td(text: str, cls: str) -> str:
    inner = "".join(fold(text, esc(text)))
    return f"<td class='{cls.strip()}'>{inner}</td>" if cls else f"<td>{inner}</td>"


def fold(text: str, inner: str) -> tuple[str, str]:
    """(the cell's text, its toggle): a text longer than ``FOLD_CHARS`` or of more than ``FOLD_LINES`` lines shows its first lines, and a
    no-script "whole text" checkbox shows the rest (print shows it all); a shorter one is left as it was.
    The marks beside an answer (score, "was right", cut off) go between the two, in view while folded."""
    text = str(text)
    if "\n" in text.strip():  # a list ("1. red\n2. blue") reads as one, not run together
        inner = f"<span class='lines'>{inner}</span>"
    if len(text) <= FOLD_CHARS and text.strip().count("\n") < FOLD_LINES:
        return inner, ""
    words = len(text.split())
    return f"<div class='folded'>{inner}</div>", f" <label class='unfold'><input type='checkbox'> whole text ({words} words)</label>"


def long_word(text: str) -> str:
    """" long-word" for a text with a word too long for a column (a path, a URL, float16's "!!!!..."): it may
    break anywhere. Not for every cell: that lets the browser squeeze columns until "triangle" breaks."""
    return " long-word" if any(len(word) > LONG_WORD for word in str(text).split()) else ""


def flipped_cells(result: ComparisonResult) -> dict[tuple[str, str], bool]:
    """(sample id, checkpoint) -> True where the checkpoint got right what the one before got wrong, False where
    it got wrong what the one before got right (``result.pairs()``); empty without references."""
    flips = {}
    for p in result.pairs():
        flips.update({(i, p.b): True for i in p.wrong_to_right})
        flips.update({(i, p.b): False for i in p.right_to_wrong})
    return flips


def flip_mark(up: bool | None, before: str) -> str:
    if up is None:
        return ""
    if up:
        return f' <span class="flip up" title="wrong at {esc(before)}, right here">&#8593;</span>'
    return f' <span class="flip down" title="right at {esc(before)}, wrong here">&#8595; was right</span>'


def filters(n_disagree: int, n_rows: int, regressed: set[str]) -> str:
    """The count of disagreements and of regressions, each with a no-script "show only these" toggle."""
    out = (f"{n_disagree} of {n_rows} samples where the checkpoints disagree (highlighted) "
           "<label><input type='checkbox' class='only-disagree'> show only these</label>")  # fmt: skip
    if regressed:
        out += (" · <label><input type='checkbox' class='only-regressions'> show only the "
                f"{len(regressed)} where a checkpoint got wrong what the one before got right (&#8595;)</label>")
    return out


def comparison_page(result: ComparisonResult, *, all_rows: bool = False) -> str:
    """The whole UTF-8 page linking ``images/`` (the saved comparison.html): at most ``PAGE_ROWS`` samples, the
    disagreements first, with a note naming the files that hold them all; ``all_rows``: every sample."""
    title = esc(f"vlm-lab comparison: {', '.join(result.checkpoints)}")
    body = comparison_html(result, max_rows=None if all_rows else PAGE_ROWS, embed_images=False, disagreements_first=True)
    return f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n<body>{body}</body></html>\n'


def has_references(result: ComparisonResult) -> bool:
    """Whether any sample has a reference (else nothing is scored: no accuracy, no reference column)."""
    return any(r["reference"] is not None for r in result.rows)


def settings_line(result: ComparisonResult) -> str:
    """What was compared on what: samples, data, metric and generation settings, in one line."""
    c = result.config
    metric = c.get("metric", "exact")
    scoring = METRIC_LABELS.get(metric, f"{metric} match") if has_references(result) else "not scored (no references)"
    parts = [f"{len(result.rows)} samples of {c.get('data', '?')}", scoring,
             f"{c.get('strategy', 'greedy')}, max {c.get('max_new_tokens', '?')} new tokens, batch {c.get('batch_size', '?')}",
             f"dtype {c.get('dtype', 'auto')}, device {c.get('device', 'auto')}"]  # fmt: skip
    return " · ".join(parts)


def summary_table(result: ComparisonResult) -> str:
    """One row per checkpoint, rounded for reading; the title of each cell holds more."""
    from vlm_lab.units import format_bytes

    scored = has_references(result)
    head = ("checkpoint", "step", *(("accuracy (95% CI)", "vs previous (paired 95% CI)", "flipped") if scored else ()),
            "latency", "tokens/s", "memory", "notes")  # fmt: skip
    lines = []
    for s in result.summary:
        kind = MEMORY_KINDS.get(s.get("memory_kind") or "", s.get("memory_kind") or "")
        scores = [
            f"<td class='num'>{_accuracy(s)}</td>",
            f"<td class='num'>{_change(s)}</td>",
            f"<td class='num' title='wrong->right / right->wrong'>{_flips(s)}</td>",
        ]
        cells = [
            f"<td>{esc(s['checkpoint'])}</td>",
            f"<td class='num'>{'' if s.get('step') is None else s['step']}</td>",
            *(scores if scored else ()),
            f"<td class='num' title='mean wall time of the batch each sample ran in'>{_seconds(s.get('mean_latency_s'))}</td>",
            f"<td class='num'>{_rate(s.get('tokens_per_s'))}</td>",
            f"<td class='num' title='{esc(kind)}'>{format_bytes(s.get('peak_memory_bytes'))}{_memory_word(s)}</td>",
            f"<td>{_notes(s)}</td>",
        ]
        lines.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    # a set without references (your own images): say why there is no accuracy, not show columns of dashes
    unscored = "" if scored else f"<p class='settings'>{esc(NO_REFERENCES)}</p>"
    return f"<table class='summary'><thead><tr>{header}</tr></thead><tbody>{''.join(lines)}</tbody></table>{unscored}"


def breakdown_tables(result: ComparisonResult) -> str:
    """Per ``meta`` key the samples carry, each checkpoint's accuracy on each value's samples (``accuracy_by``),
    folded; unfolded when it has at most ``OPEN_BREAKDOWN_VALUES`` values. None when nothing is scored."""
    out = []
    for key in result.meta_keys():
        table = result.accuracy_by(key, wide=True)
        head = "".join(f"<th>{esc(c)}</th>" for c in (key, *table.columns))
        body = "".join(f"<tr><td>{esc(value)}</td>{''.join(f'<td class=num>{esc(c)}</td>' for c in row)}</tr>"
                       for value, row in zip(table.index, table.itertuples(index=False)))  # fmt: skip
        is_open = " open" if len(table) <= OPEN_BREAKDOWN_VALUES else ""
        out.append(f"<details{is_open}><summary>accuracy by {esc(key)} ({len(table)} values; 95% bootstrap CI)</summary>"
                   f"<div class='wide'><table class='breakdown'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></details>")  # fmt: skip
    return "".join(out)


def _accuracy(s: dict) -> str:
    if s.get("accuracy") is None:
        return "<span class='ci' title='no sample has a reference'>-</span>"
    scored = "" if s["n_scored"] == s["n_samples"] else f" <span class='ci'>on {s['n_scored']} of {s['n_samples']}</span>"
    return f"{s['accuracy']:.1%} <span class='ci'>{s['ci_low']:.1%}..{s['ci_high']:.1%}</span>{scored}"


def _change(s: dict) -> str:
    if s.get("diff") is None:
        return ""
    low, high = s["diff_ci_low"], s["diff_ci_high"]
    cls = "up" if low > 0 else "down" if high < 0 else ""
    title = f"against {s['vs']}: " + ("the CI excludes 0" if cls else "the CI includes 0: no clear change")
    return (f"<span class='{cls}' title='{esc(title)}'>{s['diff'] * 100:+.1f} pts</span> "
            f"<span class='ci'>{low * 100:+.1f}..{high * 100:+.1f}</span>")  # fmt: skip


def _flips(s: dict) -> str:
    if s.get("n_wrong_to_right") is None:
        return ""
    up, down = s["n_wrong_to_right"], s["n_right_to_wrong"]
    return f"<span class='{'up' if up else 'ci'}'>{up}&#8593;</span> <span class='{'down' if down else 'ci'}'>{down}&#8595;</span>"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _memory_word(s: dict) -> str:
    kind = s.get("memory_kind") or ""
    return f" {esc(MEMORY_WORDS.get(kind, kind))}" if kind and s.get("peak_memory_bytes") is not None else ""


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _notes(s: dict) -> str:
    notes = []
    if s.get("n_nonfinite"):
        notes.append(f"<span class='nonfinite' title='NaN or inf in the scores: those outputs are noise'>{s['n_nonfinite']} NaN/inf</span>")
    if s.get("n_truncated"):
        at_context = s.get("n_at_context") or 0
        where = f" ({at_context} where the checkpoint reads no further)" if at_context else ""
        notes.append(f"<span class='truncated' title='stopped before the end token: at max_new_tokens, or where the checkpoint "
                     f"reads no further (its context)'>{s['n_truncated']} cut off{where}</span>")
    if s.get("generation_set_aside"):  # generation_settings: what its generation_config.json set and it decoded without
        said = ", ".join(f"{k}={v!r}" for k, v in s["generation_set_aside"].items())
        notes.append("<span class='truncated' title=\"its generation config's own settings, set aside: every checkpoint decoded "
                     f"with the strategy alone (checkpoint_generation=True decodes with them)\">set aside: {esc(said)}</span>")
    if s.get("from_cache"):
        notes.append(f"<span class='ci'>{s['from_cache']} of {s['n_samples']} from cache</span>")
    return " ".join(notes)


def score_mark(score: float | None) -> tuple[str, str]:
    """An output cell's class and score badge: right (1) "ok", wrong (0) "bad", not scored "" (no badge);
    a partial score (VQA accuracy) "partial" with its value, rounded: 0.6, 0.27."""
    if score is None:
        return "", ""
    if is_right(score) or is_wrong(score):
        return ("ok" if is_right(score) else "bad"), ""
    value = f"{score:.2f}".rstrip("0").rstrip(".")
    return "partial", f' <span class="score" title="partly right: score {score:.4g} of 1">{value}</span>'


def badges(out: dict) -> str:
    """Marks beside an output: NaN/inf scores (noise), cut off at max_new_tokens or the context (incomplete)."""
    marks = ""
    if out.get("nonfinite"):
        marks += ' <span class="nonfinite" title="NaN or inf in the scores: this output is noise">NaN/inf</span>'
    if out.get("at_context"):
        marks += (' <span class="truncated" title="stopped before the end token where the checkpoint reads no further '
                  '(its context holds the image, prompt and answer): shorten the prompt">cut off: reads no further</span>')
    elif out.get("truncated"):
        marks += ' <span class="truncated" title="stopped at max_new_tokens before the end token: raise max_new_tokens">cut off</span>'
    return marks


def esc(value: Any) -> str:
    return html_lib.escape(str(value))


def thumbnail(result: ComparisonResult, row: dict) -> str:
    """The row's image embedded (a notebook keeps it in the .ipynb): a small file as it is, a larger one (a photo:
    MBs of base64 a row) as a ``THUMBNAIL_PX`` copy, upright as the model saw it (a JPEG stays a JPEG)."""
    path = Path(result.image_path(row))
    if not path.is_file():
        return ""
    mime = mimetypes.guess_type(path.name)[0] or "image/png"  # a copied JPEG stays a JPEG
    content = path.read_bytes()
    if len(content) > THUMBNAIL_BYTES:
        try:
            content, mime = _small_copy(path, jpeg=mime == "image/jpeg")
        except DataError:  # changed since the comparison copied it: the view still shows, without that picture
            return ""
    return f'<img src="data:{mime};base64,{base64.b64encode(content).decode("ascii")}"{named(row)}>'


def named(row: dict) -> str:
    """A thumbnail's title and alt text: the image as the data file gives it (``my images/img 3.jpg``; ``images/`` names
    it by its content's hash), or the sample's id for an image made in memory (the shapes set). The same picture under
    two paths is one file in ``images/``; each sample's row says its own path."""
    given = row.get("image_file")
    return f' title="{esc(given)}" alt="{esc(given)}"' if given else f' alt="{esc(row["id"])}"'


def _small_copy(path: Path, *, jpeg: bool) -> tuple[bytes, str]:
    import io

    from vlm_lab.data import open_image

    image = open_image(path)  # upright, transparency on white: what the model saw
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buf = io.BytesIO()
    image.save(buf, format="JPEG" if jpeg else "PNG", **({"quality": 85} if jpeg else {}))
    return buf.getvalue(), "image/jpeg" if jpeg else "image/png"
