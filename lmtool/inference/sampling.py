"""A minimal sampler: temperature + top-k, no KV cache (the full `generate` comes later).

Used by `pretrain` to show what a causal model learned.
"""

from __future__ import annotations

import torch

from lmtool.text.specials import SPECIAL_IDS


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> str:
    """The text of up to `max_new_tokens` tokens sampled after `prompt` (prompt excluded).

    An empty prompt starts from [EOS], which in lmtool shards ends every document: the
    model then begins a new document. Stops early at [EOS] unless `stop_at_eos` is
    False, in which case documents are separated by a newline in the text. A backward
    model writes the text that comes *before* `prompt`, returned in reading order.
    """
    device = next(model.parameters()).device
    context = model.config.context
    backward = model.config.backward
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
    # Backward: the model reads right to left, and [EOS] precedes each reversed document.
    ids = [SPECIAL_IDS.eos, *(ids[::-1] if backward else ids)]
    gen = torch.Generator().manual_seed(seed)  # its own stream: the global RNG is untouched
    new: list[int] = []
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            idx = torch.tensor([ids[-context:]], device=device)  # (1, T) cropped to the context
            logits = model(idx)[0, -1].float().cpu()  # (V,) scores for the next token
            if temperature <= 0:
                next_id = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k is not None and 0 < top_k < logits.numel():
                    kth = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)  # (V,)
                next_id = int(torch.multinomial(probs, 1, generator=gen))
            if next_id == SPECIAL_IDS.eos and stop_at_eos:
                break
            ids.append(next_id)
            new.append(next_id)
    finally:
        model.train(was_training)
    if backward:
        new.reverse()  # back into reading order
    pieces, current = [], []  # decode document by document, so [EOS] becomes a newline
    for i in new:
        if i == SPECIAL_IDS.eos:
            pieces.append(current)
            current = []
        else:
            current.append(i)
    pieces.append(current)
    return "\n".join(tokenizer.decode(p) for p in pieces)
