"""Zero-shot classification with the classification adapter.

Labels are embedded as written, with the document prompt like the texts (Jina's recipe uses
"Document: " for everything but retrieval queries); each text gets the label whose embedding
is closest. Descriptive labels ("a bug report") separate better than single words."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..embedder import Embeds
from ..errors import JinalocError
from .score import AnchorScorer


def check_labels(labels: Iterable[str]) -> list[str]:
    """Stripped, non-empty, distinct labels; at least two."""
    out: list[str] = []
    for label in labels:
        label = label.strip()
        if not label:
            continue
        if label in out:
            raise JinalocError(f"label {label!r} given twice")
        if "\t" in label or "\n" in label:
            raise JinalocError(f"label {label!r}: tabs and newlines are not allowed")
        out.append(label)
    if len(out) < 2:
        raise JinalocError("give at least two labels (-l/--label or --labels-file)")
    return out


def label_scorer(
    embedder: Embeds, labels: Sequence[str], dim: int | None = None, batch_size: int = 32
) -> AnchorScorer:
    return AnchorScorer(
        embedder, check_labels(labels), "classification", "document", dim, batch_size
    )


def best_labels(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of the best label per row of a (n, labels) score matrix."""
    best = scores.argmax(axis=1)
    return best, scores[np.arange(len(scores)), best]


def classify(
    embedder: Embeds,
    texts: Sequence[str],
    labels: Sequence[str],
    dim: int | None = None,
    batch_size: int = 32,
) -> list[tuple[str, float]]:
    """(best label, its cosine) per text."""
    labels = check_labels(labels)
    best, score = best_labels(label_scorer(embedder, labels, dim, batch_size).scores(texts))
    return [(labels[i], float(s)) for i, s in zip(best.tolist(), score.tolist(), strict=True)]
