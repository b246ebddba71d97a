"""Classification metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion.

    matrix = Confusion(["neg", "pos"])
    matrix.add("pos", "neg")            # (true label, predicted label)
    matrix.add("meh", "pos")            # a label the classifier never saw: counted wrong
    report = matrix.report()            # {"accuracy", "macro_f1", "per_class", "confusion", ...}

A true label outside the classifier's labels gets a row of its own (its recall and F1
are 0: the classifier cannot predict it) and is listed under "unseen_labels". As in
scikit-learn, the macro average runs over every label that occurs as a true or a
predicted label, and a precision or recall with nothing to divide by is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Confusion:
    """Counts of (true, predicted) label pairs; rows are true labels, columns predicted."""

    def __init__(self, labels: Sequence[str]):
        self.labels: list[str] = list(labels)  # the classifier's, then unseen true labels
        self.known = len(self.labels)  # how many of them the classifier can predict
        self._index = {name: i for i, name in enumerate(self.labels)}
        self.counts = np.zeros((self.known, self.known), dtype=np.int64)

    def _row(self, label: str) -> int:
        i = self._index.get(label)
        if i is None:  # a true label the classifier never saw: one more row and column
            i = len(self.labels)
            self.labels.append(label)
            self._index[label] = i
            self.counts = np.pad(self.counts, ((0, 1), (0, 1)))
        return i

    def add(self, true: str, predicted: str) -> None:
        t, p = self._row(true), self._index.get(predicted)
        if p is None or p >= self.known:
            raise ValueError(f"predicted label {predicted!r} is not one of the classifier's")
        self.counts[t, p] += 1

    def add_counts(self, counts: np.ndarray) -> None:
        """Add a (known, known) matrix of counts over the classifier's labels (indices)."""
        self.counts[: self.known, : self.known] += np.asarray(counts, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def unseen(self) -> list[str]:
        return self.labels[self.known :]

    def report(self) -> dict:
        """Accuracy, macro-F1, per-class precision/recall/F1/support and the matrix."""
        counts = self.counts
        total = counts.sum()
        correct = np.trace(counts)
        true_n = counts.sum(axis=1)  # support of each label
        pred_n = counts.sum(axis=0)
        per_class = {}
        f1s = []
        for i, name in enumerate(self.labels):
            tp = counts[i, i]
            precision = tp / pred_n[i] if pred_n[i] else 0.0
            recall = tp / true_n[i] if true_n[i] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_class[name] = {"precision": float(precision), "recall": float(recall),
                               "f1": float(f1), "support": int(true_n[i])}
            if true_n[i] or pred_n[i]:  # a label that occurs at all
                f1s.append(f1)
        return {
            "accuracy": float(correct / total) if total else 0.0,
            "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
            "examples": int(total),
            "per_class": per_class,
            "confusion": {"labels": list(self.labels), "matrix": counts.tolist()},
            "unseen_labels": self.unseen,
        }
