"""Scoring: match functions, bootstrap accuracy CIs, paired comparisons on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlm_lab.errors import ConfigError
from vlm_lab import scoring
from vlm_lab.scoring import (bootstrap_accuracy, exact_match, get_scorer, normalized_match, paired_bootstrap, vqa_accuracy,
                             vqa_normalize)


@pytest.mark.parametrize(
    "prediction, reference, exact, normalized",
    [
        ("red", "red", True, True),
        (" Red ", "red", True, True),
        ("a red circle", "A red circle", True, True),
        ("red circle.", "a red circle", False, True),
        ("the red, circle", "red circle", False, True),
        ("blue", "red", False, False),
        ("", "red", False, False),
    ],
)
def test_match_functions(prediction, reference, exact, normalized):
    assert exact_match(prediction, reference) is exact
    assert normalized_match(prediction, reference) is normalized
    assert get_scorer("exact") is exact_match and get_scorer("normalized") is normalized_match


@pytest.mark.parametrize(
    "prediction, references, exact, normalized",
    [
        ("two", ["2", "two", "Two"], True, True),
        ("2", ["two", "2"], True, True),
        (" The cat. ", ["a cat", "kitten"], False, True),
        ("dog", ["a cat", "kitten"], False, False),
        ("red", ("red",), True, True),  # a tuple too
    ],
)
def test_a_prediction_matching_any_of_several_references_is_right(prediction, references, exact, normalized):
    # VQA-style sets list every annotator's answer: any one of them scores, and a sample still scores 0 or 1
    assert exact_match(prediction, references) is exact
    assert normalized_match(prediction, references) is normalized


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ConfigError, match="exact, normalized, vqa"):
        get_scorer("bleu")


@pytest.mark.parametrize(
    "answer, normalized",
    [
        ("Two", "2"), ("the dog.", "dog"), ("dont", "don't"), ("don't", "don't"), ("None", "0"), ("ten cats", "10 cats"),
        ("A Red Circle", "red circle"), ("an apple", "apple"), ("yes, it is", "yes it is"),  # ", " beside a space: deleted
        ("black-and-white", "black and white"),  # no space beside it: a space
        ("1,000", "1000"), ("3.5", "3.5"), ("e.g.", "eg"),  # digit,digit deletes; a period before a digit stays
        ("what?", "what"), (" left\tside\n", "left side"), ("it's", "it's"), ("whats up", "what's up"),
        ("Im", "im"),  # the official table's capitalised keys never match its lower-cased words
        ("#1 $5 50%", "#1 $5 50%"),  # not in the official punctuation list: kept
    ],
)  # fmt: skip
def test_vqa_normalize_follows_the_official_vqa_evaluation(answer, normalized):
    assert vqa_normalize(answer) == normalized


def ten(answer: str, agreeing: int) -> list[str]:
    """10 human answers, ``agreeing`` of them ``answer`` (spelled as annotators do), the rest other answers."""
    spellings = [answer, answer.capitalize(), f"{answer}.", f"the {answer}"]
    return ([spellings[i % 4] for i in range(agreeing)] + ["blue", "green", "maroon", "2"] * 3)[:10]


@pytest.mark.parametrize("agreeing, score", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)])
def test_vqa_accuracy_averages_min_of_others_over_3_leaving_each_human_out(agreeing, score):
    # by hand, 2 of 10: leaving out one of the 2, 1 other agrees (1/3); leaving out one of the 8, 2 do (2/3);
    # (2 x 1/3 + 8 x 2/3) / 10 = 0.6. 3 of 10: (3 x 2/3 + 7 x 1) / 10 = 0.9, not 1: 4 are needed for full credit
    references = ten("red", agreeing)
    assert len(references) == 10 and sum(vqa_normalize(r) == "red" for r in references) == agreeing
    assert vqa_accuracy("Red.", references) == pytest.approx(score)
    assert get_scorer("vqa") is vqa_accuracy


def test_vqa_accuracy_with_fewer_answers_and_with_one():
    assert vqa_accuracy("2", ["two", "2", "3", "4", "5"]) == pytest.approx((2 * 1 / 3 + 3 * 2 / 3) / 5)  # 5 answers, 2 agree
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0  # all humans agree: normalised all the same (the official script does not)
    # one reference has nobody to leave out: normalised exact match, 1 or 0
    assert vqa_accuracy("The dog.", "dog") == 1.0 and vqa_accuracy("dog", ["dog"]) == 1.0
    assert vqa_accuracy("cat", "dog") == 0.0 and repr(vqa_accuracy("cat", ["dog"] * 3)) == "0.0"  # not -0.0 in results.jsonl


@pytest.mark.parametrize("hits, value", [([1] * 20, 1.0), ([0] * 20, 0.0), ([True, False] * 10, 0.5)])
def test_bootstrap_accuracy_known_inputs(hits, value):
    acc = bootstrap_accuracy(hits)
    assert acc.value == value and acc.n == 20
    assert acc.ci_low <= value <= acc.ci_high
    if value in (0.0, 1.0):  # no variation: Wilson's bound for 20 of 20, n / (n + 1.96^2), not a collapsed interval
        assert acc.ci_high - acc.ci_low == pytest.approx(1 - 20 / (20 + 1.959964**2))


def test_all_right_on_few_samples_is_not_certain():
    """8 of 8 right: the bootstrap alone says [100%, 100%]; Wilson's 95% interval for 8/8 is [67.6%, 100%]."""
    right, wrong = bootstrap_accuracy([1] * 8), bootstrap_accuracy([False] * 8)
    assert (right.value, right.ci_high) == (1.0, 1.0) and right.ci_low == pytest.approx(0.6756, abs=1e-4)
    assert (wrong.value, wrong.ci_low) == (0.0, 0.0) and wrong.ci_high == pytest.approx(0.3244, abs=1e-4)
    assert bootstrap_accuracy([1] * 800).ci_low == pytest.approx(0.9952, abs=1e-4)  # narrows with n
    assert bootstrap_accuracy([1] * 8, confidence=0.99).ci_low < right.ci_low
    partial = bootstrap_accuracy([0.6] * 8)  # every VQA score 0.6: at least 67.6% of samples at 0.6, the rest anywhere in [0, 1]
    assert partial.ci_low == pytest.approx(0.6756 * 0.6, abs=1e-4) and partial.ci_high == pytest.approx(0.6756 * 0.6 + 0.3244, abs=1e-4)


def test_bootstrap_ci_width_matches_the_normal_approximation():
    hits = [1, 0] * 100  # p = 0.5, n = 200: 95% CI about +-1.96 * sqrt(.25 / 200) = +-0.069
    acc = bootstrap_accuracy(hits, seed=3)
    assert acc.ci_low == pytest.approx(0.5 - 0.069, abs=0.02)
    assert acc.ci_high == pytest.approx(0.5 + 0.069, abs=0.02)


def test_bootstrap_is_seeded():
    hits = np.random.default_rng(1).integers(0, 2, 50)
    assert bootstrap_accuracy(hits, seed=7) == bootstrap_accuracy(hits, seed=7)
    other = bootstrap_accuracy(hits, seed=8)  # another seed: the same interval up to resampling noise
    assert other.ci_low == pytest.approx(bootstrap_accuracy(hits, seed=7).ci_low, abs=0.05)


def test_bootstrap_of_nothing_is_nan():
    acc = bootstrap_accuracy([])
    assert acc.n == 0 and math.isnan(acc.value) and math.isnan(acc.ci_low)


def test_paired_comparison_counts_flips():
    a = [1, 1, 0, 0, 1]
    b = [1, 0, 1, 1, 1]
    p = paired_bootstrap(a, b, ids=["s0", "s1", "s2", "s3", "s4"], names=("old", "new"))
    assert (p.a, p.b, p.n) == ("old", "new", 5)
    assert p.accuracy_a == pytest.approx(0.6) and p.accuracy_b == pytest.approx(0.8)
    assert p.diff == pytest.approx(0.2)
    assert p.right_to_wrong == ("s1",) and p.wrong_to_right == ("s2", "s3")
    assert p.ci_low <= p.diff <= p.ci_high
    assert "wrong->right" in str(p)


def test_partial_scores_flip_neither_way_but_count_in_the_difference():
    """VQA accuracy: right is 1, wrong is 0; 0.3 -> 1 or 1 -> 0.6 is a change in the mean, not a flip."""
    a = [1.0, 1.0, 0.0, 0.3, 0.0, 0.9, 1.0]
    b = [0.0, 0.6, 1.0, 1.0, 0.3, 0.9, 1.0]
    p = paired_bootstrap(a, b, ids=[f"s{i}" for i in range(7)])
    assert p.right_to_wrong == ("s0",) and p.wrong_to_right == ("s2",)
    assert p.diff == pytest.approx((sum(b) - sum(a)) / 7) and p.ci_low <= p.diff <= p.ci_high
    acc = bootstrap_accuracy(b)  # fractional scores: the CI of their mean, inside [0, 1]
    assert acc.value == pytest.approx(sum(b) / 7) and 0.0 <= acc.ci_low < acc.value < acc.ci_high <= 1.0


def test_paired_ci_is_tighter_than_unpaired_when_both_agree_mostly():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 200)
    b = a.copy()
    b[:10] = 1  # b fixes a few of a's mistakes and breaks nothing
    p = paired_bootstrap(a, b)
    assert p.significant and p.ci_low > 0 and not p.right_to_wrong
    acc_a, acc_b = bootstrap_accuracy(a), bootstrap_accuracy(b)
    assert (p.ci_high - p.ci_low) < (acc_a.ci_high - acc_a.ci_low) + (acc_b.ci_high - acc_b.ci_low)


def test_identical_checkpoints_have_a_zero_difference():
    hits = [1, 0, 1, 1, 0, 0, 1]
    p = paired_bootstrap(hits, hits)
    assert p.diff == 0.0 and not p.significant
    # no sample flipped: how often they could disagree is Wilson's bound for 0 of 7, both ways
    assert p.ci_high == pytest.approx(1 - 7 / (7 + 1.959964**2)) and p.ci_low == pytest.approx(-p.ci_high)


def test_b_right_wherever_a_was_wrong_on_every_sample_is_significant_but_not_certain():
    p = paired_bootstrap([0] * 8, [1] * 8)
    assert p.diff == 1.0 and p.significant and p.ci_high == 1.0 and p.ci_low == pytest.approx(2 * 0.6756 - 1, abs=1e-4)


def test_paired_scores_must_pair():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1, 0], [1])


def test_bootstrap_of_few_samples_is_the_textbook_one_draw():
    hits = np.random.default_rng(1).random(64) < 0.7
    idx = np.random.default_rng(0).integers(0, 64, size=(scoring.N_RESAMPLES, 64))  # all resamples in one draw
    low, high = np.quantile(hits[idx].mean(axis=1), [0.025, 0.975])
    acc = scoring.bootstrap_accuracy(hits, seed=0)
    assert (acc.ci_low, acc.ci_high) == (float(low), float(high))


def test_bootstrap_of_many_samples_holds_little_memory():
    import tracemalloc

    hits = np.random.default_rng(2).random(50_000) < 0.6
    tracemalloc.start()
    try:
        acc = scoring.bootstrap_accuracy(hits)
        paired = scoring.paired_bootstrap(hits, ~hits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150 * 2**20  # drawing all 2000 x 50k indices at once held 1.6 GB
    se = (0.6 * 0.4 / 50_000) ** 0.5
    assert acc.ci_low < acc.value < acc.ci_high and abs((acc.ci_high - acc.ci_low) - 2 * 1.96 * se) < 0.2 * 2 * 1.96 * se
    assert paired.ci_low < paired.diff < paired.ci_high


def test_few_valued_scores_are_resampled_as_counts_with_the_same_distribution(monkeypatch):
    """0/1 scores (and paired -1/0/1 differences) are resampled by drawing how often each value
    comes up (multinomial) instead of n indices: the same distribution, O(1) per resample in n."""
    rng = np.random.default_rng(3)
    hits = (rng.random(300) < 0.65).astype(float)
    diffs = rng.choice([-1.0, 0.0, 1.0], size=300, p=[0.2, 0.5, 0.3])
    counted = [scoring._resample_means(v, 20000, seed=1) for v in (hits, diffs)]
    monkeypatch.setattr(scoring, "MAX_DISTINCT_COUNTED", 0)  # every resample as n drawn indices
    drawn = [scoring._resample_means(v, 20000, seed=1) for v in (hits, diffs)]
    for c, d, v in zip(counted, drawn, (hits, diffs)):
        assert not np.array_equal(c, d)  # really two methods
        assert np.quantile(c, [0.025, 0.5, 0.975]) == pytest.approx(np.quantile(d, [0.025, 0.5, 0.975]), abs=0.008)
        assert c.mean() == pytest.approx(v.mean(), abs=0.002) and c.std() == pytest.approx(d.std(), rel=0.03)


@pytest.mark.parametrize(
    "prediction, reference, exact, normalized",
    [
        ("café", "cafe\u0301", True, True),  # a reference typed on macOS (decomposed) is the same text as the output
        ("Ａｎｓｗｅｒ　２", "answer 2", False, True),  # full-width letters and space (CJK input methods)
        ("“red”", "red", False, True),  # curly quotes, as chat models write them
        ("red…", "red", False, True),
        ("it’s red。", "it s red", False, True),  # a typographic apostrophe and a CJK full stop are punctuation too
    ],
)
def test_matching_reads_unicode_as_a_person_does(prediction, reference, exact, normalized):
    assert exact_match(prediction, reference) is exact
    assert normalized_match(prediction, reference) is normalized


def test_vqa_accuracy_reads_decomposed_accents_as_the_same_answer():
    assert vqa_accuracy("café", ["cafe\u0301"] * 4) == 1.0
