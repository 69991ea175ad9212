"""Scoring generated answers against references.

``exact_match``: identical after trimming surrounding whitespace and case.
``normalized_match``: identical after also dropping punctuation, articles
(a/an/the) and repeated spaces, the VQA-style normalisation.
"""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize(text: str) -> str:
    text = text.casefold().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> bool:
    return prediction.strip().casefold() == reference.strip().casefold()


def normalized_match(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


SCORERS = {"exact": exact_match, "normalized": normalized_match}
