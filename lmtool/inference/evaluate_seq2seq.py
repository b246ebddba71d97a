"""Scoring a sequence-to-sequence run on held-out pairs.

    from lmtool.inference.evaluate_seq2seq import evaluate_seq2seq
    result = evaluate_seq2seq("runs/mt", "test.tsv", beams=5)
    result["bleu"], result["chrf"], result["loss"], result["bleu_signature"]

Two measures, as the field reports them:
1. teacher-forced loss and perplexity of the references (no label smoothing), per
   target token ([EOS] included), and the accuracy of the next-token argmax;
2. the outputs the model writes for the sources (greedy, or beam search with `beams`),
   scored against the references by sacrebleu (Post 2018): corpus BLEU and chrF with
   its default settings, whose signatures say exactly which (tokenizer, smoothing,
   version), so the figures can be compared with published ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmtool.errors import BadInput


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """sacrebleu's corpus BLEU and chrF of `hypotheses` against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def evaluate_seq2seq(run, pairs: str | Path | None = None, *, source=None, target=None,
                     beams: int = 1, length_penalty: float | None = None,
                     max_new_tokens: int | None = None, batch_size: int = 32,
                     device: str = "auto", precision: str = "auto") -> dict:
    """loss, perplexity, accuracy, tokens, pairs, bleu, chrf (and their signatures) of
    the run on `pairs` (or aligned `source` and `target` files)."""
    from lmtool.inference.generation import GenerateOptions
    from lmtool.inference.translate import load_seq2seq, translate
    from lmtool.text.pairs import iter_pairs
    from lmtool.training.objectives import Seq2SeqObjective, Sums
    from lmtool.training.pairs import PairEval, encode_pairs

    if batch_size < 1:
        raise BadInput("--batch-size must be at least 1")
    lm = load_seq2seq(run, device=device, precision=precision)
    texts = list(iter_pairs(pairs, source=source, target=target))
    if not texts:
        raise BadInput(f"{pairs or source} holds no pairs")
    encoded = encode_pairs(texts, lm.tokenizer, max_tokens=lm.config.context)
    objective = Seq2SeqObjective(0.0)
    sums = Sums()
    with torch.inference_mode():
        for _, batch in PairEval(encoded, batch_size).batches():
            sums.add(objective.sums(lm.model, batch.to(lm.device)))
    result = {**objective.metrics(sums), "pairs": len(texts), "beams": beams}
    options = GenerateOptions(
        max_new_tokens=max_new_tokens if max_new_tokens is not None else lm.config.context,
        temperature=0.0, beams=beams, length_penalty=length_penalty)
    outputs = translate(lm, [s for s, _ in texts], options, batch_size=batch_size)
    result.update(corpus_scores([g.text for g in outputs], [t for _, t in texts]))
    return result
