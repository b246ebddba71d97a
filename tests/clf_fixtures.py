"""Tiny classifier runs for the inference tests (not a test file).

`make_classifier_run` saves a classifier with random weights in the run format that
`finetune classifier` writes, so classify/evaluate can be tested on their own.
"""

from __future__ import annotations

from pathlib import Path

from lm_fixtures import generate_text

BACKBONES = {
    "lstm": dict(arch="lstm", objective="causal", layers=2, dim=16, hidden=24, context=8),
    "backward": dict(arch="lstm", objective="causal", layers=2, dim=16, hidden=24, context=8,
                     backward=True),
    "causal": dict(arch="transformer", objective="causal", layers=2, heads=2, dim=16,
                   context=16),
    "masked": dict(arch="transformer", objective="masked", layers=2, heads=2, dim=16,
                   context=16),
}


def make_tokenizer(root: Path) -> Path:
    from lmtool.text.tokenizer import save_tokenizer, train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    text = root / "tok-text.txt"
    text.write_text(generate_text(0, 60))
    path = root / "tok.json"
    save_tokenizer(train_tokenizer([text], kind="char", vocab_size=64, min_frequency=1), path)
    return path


def make_classifier_run(root: Path, kind: str = "lstm", labels=("neg", "pos"), seed: int = 0,
                        max_tokens: int = 1440, name: str | None = None) -> Path:
    """A classifier run directory with random weights (and batch-norm statistics that
    are not the identity)."""
    import torch

    from lmtool.checkpoint import save_checkpoint
    from lmtool.models import build_model
    from lmtool.models.classifier import Classifier, ClassifierConfig
    from lmtool.models.config import ModelConfig
    from lmtool.text.tokenizer import load_tokenizer

    tok_path = root / "tok.json"
    if not tok_path.exists():
        make_tokenizer(root)
    tok = load_tokenizer(tok_path)
    torch.manual_seed(seed)
    mc = ModelConfig(vocab_size=tok.get_vocab_size(), dropout=0.0, **BACKBONES[kind])
    cc = ClassifierConfig(labels=list(labels), max_tokens=max_tokens)
    clf = Classifier(build_model(mc), cc)
    for bn in (m for m in clf.modules() if isinstance(m, torch.nn.BatchNorm1d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    out = root / (name or f"clf-{kind}-{seed}")
    save_checkpoint(
        out, model=clf, tokenizer_json=tok_path.read_text("utf-8"), metrics=[],
        config={"task": "classifier", "arch": mc.arch, "objective": mc.objective,
                "model": mc.to_dict(), "classifier": cc.to_dict(),
                "tokenizer": {"vocab_size": mc.vocab_size, "kind": "char"}},
    )
    return out
