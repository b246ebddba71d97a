"""A classifier scored on labelled data: accuracy, macro-F1, per-class scores, confusion.

    result = evaluate_classifier("runs/clf", "reviews/test.tsv")
    result["accuracy"], result["macro_f1"], result["confusion"]["matrix"]

The labelled source is read by text/labelled.py, as `finetune classifier` reads it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from lmtool.errors import BadInput
from lmtool.inference.classify import BLOCK, load_scorer
from lmtool.metrics import Confusion
from lmtool.text.files import display_name
from lmtool.text.labelled import LabelledReport, iter_labelled
from lmtool.wording import listing


def evaluate_classifier(
    run: Path | str,
    labelled: str | Path,
    *,
    ensemble: Sequence[Path | str] = (),
    batch_size: int = 64,
    block: int = BLOCK,
    device: str = "auto",
    precision: str = "auto",
    encoding_errors: str = "strict",
    report: LabelledReport | None = None,
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of the
    classifier in `run` (with `ensemble`) on a labelled file, folder or "-".

    Streams: examples are read, scored and counted a block at a time. Every example
    counts the classifier's best label (an empty text too: the classifier was trained
    on such). A true label the classifier never saw is counted as wrong and listed
    under "unseen_labels" with its number of examples; a set with none of the
    classifier's labels is refused (BadInput): it was not labelled for this classifier.
    """
    scorer = load_scorer(run, ensemble=ensemble, batch_size=batch_size, device=device,
                         precision=precision)
    report = report if report is not None else LabelledReport()
    labels: deque[str] = deque()  # true labels of the examples read and not yet scored

    def documents() -> Iterator[tuple[str, str]]:
        for example in iter_labelled(labelled, encoding_errors=encoding_errors, report=report):
            labels.append(example.label)
            yield example.where, example.text

    confusion = Confusion(scorer.labels)
    for p in scorer.predict(documents(), block=block):
        confusion.add(labels.popleft(), p.best)
    result = confusion.report()
    if not any(result["per_class"][name]["support"] for name in scorer.labels):
        name = display_name(labelled)
        raise BadInput(f"{name} holds none of the classifier's labels: it has "
                       f"{listing(confusion.unseen, 5)}; the classifier knows "
                       f"{listing(scorer.labels, 5)}",
                       "evaluate on examples labelled with the classifier's classes")
    support = {name: result["per_class"][name]["support"] for name in result["unseen_labels"]}
    result["unseen_labels"] = support  # label → examples, all counted wrong
    result["labels"] = list(scorer.labels)
    result["empty_texts"] = len(report.empty_texts)
    return result
