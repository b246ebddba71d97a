"""Classification metrics, checked against counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lmtool.metrics import Confusion


def test_metrics_by_hand():
    m = Confusion(["a", "b", "c"])
    pairs = [("a", "a"), ("a", "a"), ("a", "b"), ("b", "b"), ("b", "a"), ("c", "c")]
    for t, p in pairs:
        m.add(t, p)
    r = m.report()
    assert r["accuracy"] == pytest.approx(4 / 6)
    # a: tp 2, predicted 3, true 3 → P 2/3, R 2/3; b: tp 1, predicted 2, true 2 → 1/2, 1/2
    assert r["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["f1"] == pytest.approx(1.0)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert r["confusion"] == {"labels": ["a", "b", "c"],
                              "matrix": [[2, 1, 0], [1, 1, 0], [0, 0, 1]]}


def test_unseen_true_label_is_counted_wrong():
    m = Confusion(["neg", "pos"])
    m.add("pos", "pos")
    m.add("neutral", "pos")  # never seen in training: a row of its own, always wrong
    m.add("neutral", "neg")
    r = m.report()
    assert r["accuracy"] == pytest.approx(1 / 3)
    assert r["unseen_labels"] == ["neutral"]
    assert r["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert r["confusion"]["matrix"] == [[0, 0, 0], [0, 1, 0], [1, 1, 0]]
    # pos: P 1/2, R 1 → F1 2/3; neg: nothing right → 0; neutral: 0
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    with pytest.raises(ValueError, match="not one of the classifier's"):
        m.add("pos", "neutral")


def test_label_never_seen_as_truth_nor_predicted_is_left_out_of_the_average():
    m = Confusion(["a", "b", "c"])
    m.add("a", "a")
    m.add("b", "a")
    r = m.report()
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)  # c takes no part
    m.add_counts(np.array([[0, 0, 0], [0, 0, 0], [0, 0, 3]]))
    assert m.report()["accuracy"] == pytest.approx(4 / 5)
