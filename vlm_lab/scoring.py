"""Scoring generated answers: match functions, bootstrap CIs, paired comparisons.

``exact_match``: identical after trimming surrounding whitespace and case, as Unicode text
(NFC: ``"café"`` typed with a combining accent, as macOS file names and some exports hold it, is ``"café"``).
``normalized_match``: identical after also folding compatibility forms (NFKC: full-width
``"Ａ２"`` is ``"A2"``), dropping punctuation (ASCII and Unicode's: curly quotes, ``…``, ``。``),
articles (a/an/the) and repeated spaces, the VQA-style normalisation.
Both take one reference or several acceptable ones (VQA-style sets list what each
annotator answered): the prediction matches when it matches any of them, so each
sample still scores 0 or 1.
``vqa_accuracy``: the VQA benchmark's accuracy against the human answers (VQAv2 gives 10
per question): a fraction in [0, 1] (0.3, 0.6, 0.9 for 1, 2, 3 of 10 agreeing; 1 from 4).
A sample is *right* at score 1 and *wrong* at 0 (``is_right``/``is_wrong``: paired flips and
the green/red marks); a partial score is neither and shows its value.

Confidence intervals are percentile bootstraps (numpy, seeded): resample the
samples with replacement ``n_resamples`` times and take the 2.5th and 97.5th
percentiles of the statistic. The paired version resamples the *same* indices
for both checkpoints, so the interval of the accuracy difference accounts for
the samples both get right or both get wrong (much tighter than two separate CIs).

When every score is the same (8 of 8 right; two checkpoints that agree on every
sample) no resample can differ, and the bootstrap would claim certainty: 100% [100,
100] from 8 samples. Then the interval is how far the mean can be for a population
in which at least the Wilson lower bound's share of samples (n/(n+z^2): 67.6% for 8)
score that value and the rest anything: ``[100%, 100%]`` becomes ``[67.6%, 100%]``,
and a zero difference on 8 samples ``[-32.4%, +32.4%]`` (the rule of three's width).
"""

from __future__ import annotations

import dataclasses
import re
import string
import unicodedata
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from vlm_lab.errors import ConfigError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})

N_RESAMPLES = 2000
MAX_DRAWN = 2**22  # bootstrap indices drawn at once (32 MB of int64)
MAX_DISTINCT_COUNTED = 16  # up to this many distinct scores, resamples are drawn as counts per value
CONFIDENCE = 0.95


# The official VQA evaluation's answer normalisation (GT-Vision-Lab/VQA, vqaEval.py), as data:
_VQA_PUNCT = ';/[]"{}()=+\\_-><@`,?!'  # not . (below), ' (contractions), : # $ % & * ^ ~ |
_VQA_DIGIT_COMMA = re.compile(r"\d,\d")  # "1,000": all punctuation is deleted rather than spaced
_VQA_PERIOD = re.compile(r"\.(?!\d)")  # a period not before a digit ("3.5" keeps its own)
_VQA_NUMBERS = dict(none="0", zero="0", one="1", two="2", three="3", four="4", five="5", six="6", seven="7", eight="8",
                    nine="9", ten="10")  # fmt: skip
# word as typed -> with its apostrophe; the official table verbatim (its capitalised keys never match, as there)
_VQA_CONTRACTIONS = dict(pair.split(":") for pair in """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've couldnt've:couldn't've
didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've hasnt:hasn't havent:haven't
hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm
Ive:I've isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't
mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've neednt:needn't
notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at 'ow'sat:'ow's'at shant:shan't
shed've:she'd've she'dve:she'd've she's:she's shouldve:should've shouldnt:shouldn't shouldnt've:shouldn't've
shouldn'tve:shouldn't've somebody'd:somebodyd somebodyd've:somebody'd've somebody'dve:somebody'd've
somebodyll:somebody'll somebodys:somebody's someoned:someone'd someoned've:someone'd've someone'dve:someone'd've
someonell:someone'll someones:someone's somethingd:something'd somethingd've:something'd've
something'dve:something'd've somethingll:something'll thats:that's thered:there'd thered've:there'd've
there'dve:there'd've therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've
theyll:they'll theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've
werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd wheres:where's
whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll
whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've
yall:y'all yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've
youd:you'd youd've:you'd've you'dve:you'd've youll:you'll youre:you're youve:you've
""".split())


def normalize(text: str) -> str:
    """``normalized_match``'s form of an answer: NFKC, case folded, punctuation and articles dropped, spaces single."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCT)
    # a model's “red” or red… is red: Unicode punctuation (category P*) goes too; per character, answers are short
    text = "".join(" " if unicodedata.category(c)[0] == "P" else c for c in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


Reference = str | Sequence[str]  # one answer, or several acceptable ones


def vqa_normalize(answer: str) -> str:
    """An answer as the official VQA evaluation compares it (its processPunctuation + processDigitArticle).

    Each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` becomes a space, or is deleted when the
    text has it beside a space or has a digit-comma-digit ("1,000" -> "1000"); a period is dropped
    unless a digit follows ("3.5" stays); then lower case, number words none/zero..ten become
    digits, the articles a/an/the go, and contractions typed without the apostrophe get it
    ("dont" -> "don't"). ``"Two"`` -> ``"2"``, ``"the dog."`` -> ``"dog"``, ``"yes, it is"`` -> ``"yes it is"``.
    """
    # NFC first: a decomposed "café" is the same answer (canonical equivalence, not a looser match)
    text = raw = unicodedata.normalize("NFC", answer).replace("\n", " ").replace("\t", " ").strip()
    delete = _VQA_DIGIT_COMMA.search(raw) is not None
    for p in _VQA_PUNCT:  # each mark decided on the text before any was replaced, as there
        text = text.replace(p, "" if delete or f"{p} " in raw or f" {p}" in raw else " ")
    text = _VQA_PERIOD.sub("", text)
    words = [_VQA_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words if w not in ("a", "an", "the"))


def vqa_accuracy(prediction: str, reference: Reference) -> float:
    """VQA accuracy of ``prediction`` against the human answers in ``reference``.

    Both sides go through ``vqa_normalize``; the score is the mean, over each human answer
    left out in turn, of ``min(1, (how many of the others equal the prediction) / 3)``: with
    10 answers, 1, 2, 3 and 4+ agreeing score 0.3, 0.6, 0.9 and 1.0. One reference (a string,
    or a list of one) has nobody to leave out: normalised exact match, 1.0 or 0.0.

    Unlike the official script this normalises the prediction and the answers even when all
    humans agree (it then compares them raw), as evaluation harnesses (lmms-eval) do: a model
    answering "Two" to ten humans' "2" scores 1, not 0.
    """
    answers = [vqa_normalize(r) for r in references(reference)]
    answer = vqa_normalize(prediction)
    if len(answers) == 1:
        return float(answer == answers[0])
    agree = sum(a == answer for a in answers)
    if agree == 0:
        return 0.0
    # leaving out an agreeing answer leaves agree - 1 others that agree; leaving out any other, agree
    return (agree * min(1.0, (agree - 1) / 3) + (len(answers) - agree) * min(1.0, agree / 3)) / len(answers)


def is_right(score: float) -> bool:
    """Full credit: 1 (a match; under VQA accuracy, at least 4 of 10 humans gave the answer)."""
    return score >= 1


def is_wrong(score: float) -> bool:
    """No credit: 0. A partial VQA score (0.3, 0.6, 0.9) is neither right nor wrong."""
    return score <= 0


def references(reference: Reference) -> tuple[str, ...]:
    """The acceptable answers: ``"red"`` -> ``("red",)``, a list as a tuple."""
    return (reference,) if isinstance(reference, str) else tuple(reference)


def exact_match(prediction: str, reference: Reference) -> bool:
    """``prediction`` equals the reference (any one of several), ignoring case and surrounding whitespace."""
    answer = _exact_form(prediction)
    return any(answer == _exact_form(r) for r in references(reference))


def _exact_form(text: str) -> str:
    # NFC after casefold too: folding can decompose ("ǰ"), and two spellings of one text must compare equal
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).strip().casefold())


def normalized_match(prediction: str, reference: Reference) -> bool:
    """``prediction`` equals the reference (any one of several) after ``normalize``."""
    answer = normalize(prediction)
    return any(answer == normalize(r) for r in references(reference))


SCORERS: dict[str, Callable[[str, Reference], float]] = {
    "exact": exact_match, "normalized": normalized_match, "vqa": vqa_accuracy,
}  # fmt: skip
METRIC_LABELS = {"exact": "exact match", "normalized": "normalized match", "vqa": "VQA accuracy"}


def get_scorer(metric: str) -> Callable[[str, Reference], float]:
    """The score function called ``metric`` (a bool or a fraction in [0, 1]); unknown names raise
    ``ConfigError`` listing the known ones."""
    try:
        return SCORERS[metric]
    except KeyError:
        raise ConfigError(f"unknown metric {metric!r}; use one of {', '.join(SCORERS)}") from None


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Accuracy of one checkpoint with its bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int


def _hits_array(hits: Sequence[bool | float]) -> np.ndarray:
    arr = np.asarray(hits, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"hits must be a flat sequence of scores in [0, 1], got shape {arr.shape}")
    return arr


def _resample_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of ``values``.

    Scores take few distinct values (0/1, VQA's 0/0.3/0.6/0.9/1; a paired difference -1/0/1): a resample of n
    draws each distinct value a Multinomial(n, its frequency) number of times, and its
    mean depends on those counts only, so the counts are drawn instead of n indices: the
    same distribution, O(distinct) per resample instead of O(n) (a 10k-sample set: 0.1 s
    instead of 10 s per CI). Other values: indices drawn in blocks of at most
    ``MAX_DRAWN`` (50k samples need ~60 MB, not the 1.6 GB of all 2000 x 50k at once).
    """
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(values, return_counts=True)
    if distinct.size <= MAX_DISTINCT_COUNTED:
        return rng.multinomial(values.size, counts / values.size, size=n_resamples) @ distinct / values.size
    rows = max(1, MAX_DRAWN // values.size)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        means[start:stop] = values[rng.integers(0, values.size, size=(stop - start, values.size))].mean(axis=1)
    return means


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def _interval(values: np.ndarray, bounds: tuple[float, float], n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """The percentile bootstrap CI of the mean of ``values`` (each within ``bounds``), or, when they are all one
    value v, the mean's range if at least Wilson's lower bound L of the samples score v: L*v + (1 - L)*bounds."""
    if values.min() != values.max():
        return _percentiles(_resample_means(values, n_resamples, seed), confidence)
    z2 = NormalDist().inv_cdf(1 - (1 - confidence) / 2) ** 2
    share = values.size / (values.size + z2)  # Wilson's lower bound for n successes of n
    v = float(values[0])
    return share * v + (1 - share) * bounds[0], share * v + (1 - share) * bounds[1]


def bootstrap_accuracy(
    hits: Sequence[bool | float], *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0
) -> Accuracy:
    """Mean of ``hits`` with a percentile-bootstrap CI; NaNs everywhere for no samples."""
    arr = _hits_array(hits)
    if arr.size == 0:
        return Accuracy(float("nan"), float("nan"), float("nan"), 0)
    low, high = _interval(arr, (0.0, 1.0), n_resamples, confidence, seed)
    return Accuracy(float(arr.mean()), low, high, int(arr.size))


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Checkpoint ``b`` against checkpoint ``a`` on the same samples."""

    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    diff: float  # accuracy_b - accuracy_a
    ci_low: float  # of diff, paired bootstrap
    ci_high: float
    n: int
    right_to_wrong: tuple[str, ...]  # sample ids a got right (1) and b wrong (0); partial VQA scores are neither
    wrong_to_right: tuple[str, ...]  # sample ids a got wrong (0) and b right (1)

    @property
    def significant(self) -> bool:
        """True when the CI of the difference excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0

    def __str__(self) -> str:
        return (
            f"{self.b} vs {self.a}: {self.diff:+.1%} (95% CI {self.ci_low:+.1%} .. {self.ci_high:+.1%}, n={self.n}); "
            f"{len(self.wrong_to_right)} wrong->right, {len(self.right_to_wrong)} right->wrong"
        )


def paired_bootstrap(
    a_hits: Sequence[bool | float],
    b_hits: Sequence[bool | float],
    *,
    ids: Sequence[str] | None = None,
    names: tuple[str, str] = ("a", "b"),
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> PairedComparison:
    """Paired comparison of two checkpoints scored on the same samples, in the same order.

    Raises:
        ValueError: the two score lists differ in length (they must be paired).
    """
    a, b = _hits_array(a_hits), _hits_array(b_hits)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same length, got {a.size} and {b.size}")
    ids = [str(i) for i in (ids if ids is not None else range(a.size))]
    if len(ids) != a.size:
        raise ValueError(f"got {len(ids)} ids for {a.size} paired scores")
    r2w = tuple(i for i, x, y in zip(ids, a, b) if is_right(x) and is_wrong(y))
    w2r = tuple(i for i, x, y in zip(ids, a, b) if is_wrong(x) and is_right(y))
    if a.size == 0:
        nan = float("nan")
        return PairedComparison(names[0], names[1], nan, nan, nan, nan, nan, 0, r2w, w2r)
    low, high = _interval(b - a, (-1.0, 1.0), n_resamples, confidence, seed)  # one resample for both: paired
    return PairedComparison(
        a=names[0],
        b=names[1],
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        diff=float(b.mean() - a.mean()),
        ci_low=low,
        ci_high=high,
        n=int(a.size),
        right_to_wrong=r2w,
        wrong_to_right=w2r,
    )
