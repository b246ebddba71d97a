"""How much a language model's features know about the labels, before any fine-tuning.

    python benchmarks/feature_probe.py RUN TRAIN.tsv TEST.tsv [--threads 1] [--layers]

Not a test. The classifier's own reading of a document (lmtool.models.classifier: the
backbone's hidden states, concat-pooled) from the run's backbone, frozen, and the same
backbone with random weights (seeded); on each, an L2-regularised logistic regression
(the strength chosen on a held-out tenth of TRAIN) trained on TRAIN and scored on TEST.
If the pre-trained features score no better than the random ones, fine-tuning the
classifier has nothing to transfer: the language model, not the recipe, is what fails.
`--layers` (an AWD-LSTM) probes each depth on its own as well: the mean of the token
embeddings (a bag of words), then each LSTM layer's concat pool, to show where it is lost.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # see pretrain.py

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)  # weight decay on the logistic regression's weights
MAX_TOKENS = 400


def features(run: Path, pretrained: bool, docs, layers: bool = False,
             batch: int = 64) -> dict[str, torch.Tensor]:
    """Concat-pooled features (N, 3C) of every document, read as the classifier reads
    ("classifier"); with `layers`, also per depth ("embedding bag", "LSTM 1", ...)."""
    from lmtool.checkpoint import load_checkpoint
    from lmtool.models import build_model
    from lmtool.models.classifier import Classifier, ClassifierConfig, concat_pool, pad_batch
    from lmtool.models.config import ModelConfig

    config = ModelConfig.from_dict(json.loads((run / "config.json").read_text())["model"])
    torch.manual_seed(0)
    backbone = build_model(config)
    if pretrained:
        backbone.load_state_dict(load_checkpoint(run, "cpu").model.state_dict())
    clf = Classifier(backbone, ClassifierConfig(labels=["a", "b"], max_tokens=MAX_TOKENS)).eval()
    rows = [ids for ids, _ in clf.encode_documents([docs.tokens(i) for i in range(len(docs))])]
    out: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            ids, lengths = pad_batch(rows[start : start + batch])
            pooled = {"classifier": concat_pool(clf.read(ids, lengths), lengths,
                                                first=clf.masked)}
            if layers:
                pooled.update(depths(backbone, ids, lengths))
            for name, x in pooled.items():
                out.setdefault(name, []).append(x)
    return {name: torch.cat(xs) for name, xs in out.items()}


def depths(backbone, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """An AWD-LSTM's mean token embedding, then each layer's concat pool (whole documents,
    zero state: probe figures, not the classifier's chunked reading)."""
    from lmtool.models.classifier import concat_pool

    x = torch.nn.functional.embedding(ids, backbone.embedding.weight)  # (B, T, E)
    width = x.size(-1)
    pooled = {"embedding bag": concat_pool(x, lengths)[:, 2 * width:]}  # the mean third
    for i, rnn in enumerate(backbone.rnns):
        x, _ = rnn(x, None)
        pooled[f"LSTM {i + 1}"] = concat_pool(x, lengths)  # counted from 1, as the README
    return pooled


def logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int,
                        strength: float) -> torch.nn.Linear:
    linear = torch.nn.Linear(x.size(1), classes)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(linear(x), y)
                + strength * linear.weight.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return linear


def accuracy(linear: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((linear(x).argmax(1) == y).float().mean())


def probe(x_train: torch.Tensor, x_test: torch.Tensor, y_train: torch.Tensor,
          y_test: torch.Tensor, classes: int) -> tuple[float, float]:
    """(chosen strength, test accuracy) of the logistic regression on these features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    held = torch.arange(len(y_train)) % 10 == 0
    fit, pick = ~held, held
    scores = {s: accuracy(logistic_regression(x_train[fit], y_train[fit], classes, s),
                          x_train[pick], y_train[pick]) for s in STRENGTHS}
    best = max(STRENGTHS, key=lambda s: scores[s])
    return best, accuracy(logistic_regression(x_train, y_train, classes, best), x_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", action="store_true",
                        help="an AWD-LSTM: probe the embedding bag and each layer too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lmtool.models.config import ModelConfig
    from lmtool.text.labelled import LabelVocab
    from lmtool.text.tokenizer import load_tokenizer
    from lmtool.training.classifier import _read

    config = json.loads((args.run / "config.json").read_text())
    imported = bool(ModelConfig.from_dict(config["model"]).specials)
    tok = load_tokenizer(args.run / "tokenizer.json", lmtool_specials=not imported)
    train, _ = _read(args.train, tok, "strict", MAX_TOKENS, "first", "training")
    test, _ = _read(args.test, tok, "strict", MAX_TOKENS, "first", "test")
    vocab = LabelVocab.build(train.names[c] for c in set(train.codes.tolist()))
    y_train = torch.as_tensor(train.targets(vocab))
    y_test = torch.as_tensor(np.asarray(test.targets(vocab)))
    print(f"{args.run}: {len(y_train)} training, {len(y_test)} test documents, "
          f"{len(vocab)} classes")
    for pretrained in (True, False):
        start = time.time()
        x_train = features(args.run, pretrained, train, args.layers)
        x_test = features(args.run, pretrained, test, args.layers)
        for name in x_train:
            strength, acc = probe(x_train[name], x_test[name], y_train, y_test, len(vocab))
            print(f"  {'pre-trained' if pretrained else 'random':11} backbone, {name:13}: "
                  f"test accuracy {acc:.3f} (weight decay {strength:g}, "
                  f"{time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
