"""Beam search over a batch of prompts: the `beams` most likely continuations of each.

Rows of the state are prompt-major: row b * K + k is beam k of prompt b (K = beams).
Each step, for every prompt:
1. every beam's log-probabilities for every next token are added to the beam's score,
   and the 2K best (beam, token) pairs over its K x V candidates are taken (one topk
   over (B, K * V): no Python per vocabulary item);
2. going down those 2K in order, a pair ending the text ([EOS], or a stop string) becomes
   a finished hypothesis if it ranks among the first K; any other pair continues as
   one of the K beams of the next step, until there are K;
3. the state's rows are reordered to follow the surviving beams' parents
   (`state.select(index)`: index_select on the KV cache or the LSTM's (h, c); nothing is
   re-read).
A hypothesis is scored by its summed log-probability divided by length ** length_penalty
(length = tokens generated, [EOS] included): 0 ranks by plain probability, 1 (the
default) by the mean log-probability per token, so short texts are not always preferred.
A prompt is done when it holds K finished hypotheses and its best running beam, scored
at its present length, cannot beat the worst of them (HF transformers' default rule);
at max_new_tokens the running beams are finished as they stand.
"""

from __future__ import annotations

import torch

from lmtool.inference.decoding import Decoder, select
from lmtool.inference.generation import GenerateOptions, Generation
from lmtool.inference.runs import LoadedLM
from lmtool.inference.sampling import repetition_penalty
from lmtool.inference.text import Prompt, StopMatcher, continuation_text, cut_backward
from lmtool.text.specials import SPECIAL_IDS

NEG_INF = float("-inf")


class _Hypotheses:
    """The K best finished texts of one prompt."""

    def __init__(self, size: int, length_penalty: float):
        self.size = size
        self.length_penalty = length_penalty
        self.items: list[tuple[float, float, list[int], str]] = []  # score, logprob, ids, why

    def score(self, logprob: float, length: int) -> float:
        return logprob / max(length, 1) ** self.length_penalty

    def add(self, logprob: float, tokens: list[int], length: int, reason: str) -> None:
        self.items.append((self.score(logprob, length), logprob, tokens, reason))
        self.items.sort(key=lambda item: -item[0])
        del self.items[self.size :]

    def done(self, best_running: float, length: int) -> bool:
        if len(self.items) < self.size:
            return False
        return self.score(best_running, length) <= self.items[-1][0]


def beam_search(
    lm: LoadedLM, prompts: list[Prompt], options: GenerateOptions, start=None, constrain=None
) -> list[Generation]:
    """The options.num_return best continuations of each prompt, best first. `start`:
    (state, logits) of the prompts already read (left untouched), else they are read.
    `constrain`: each row's generated ids (B*K lists) → a bias (B*K, V) added to the
    next logits, or None once it constrains no more (token healing's first tokens)."""
    backward = lm.config.backward
    if options.max_new_tokens == 0:
        return [Generation(p.text, "", [], "length", p.index, 0, 0.0, 0.0, p.truncated, backward)
                for p in prompts]
    K, B = options.beams, len(prompts)
    decoder = Decoder(lm)
    hyps = [_Hypotheses(K, options.length_penalty) for _ in prompts]
    done = [False] * B
    with torch.inference_mode():
        if start is None:
            start = decoder.start([p.ids for p in prompts], options.max_new_tokens)
        state, logits = start
        expand = torch.arange(B, device=lm.device).repeat_interleave(K)  # (B*K,)
        state, logits = state.select(expand), logits[expand]  # (B*K, V), a new state
        # Only beam 0 of each prompt is live at first, so the first step's K best
        # tokens all come from the prompt itself rather than K copies of it.
        scores = torch.full((B, K), NEG_INF, device=lm.device)
        scores[:, 0] = 0.0
        seqs: list[list[int]] = [[] for _ in range(B * K)]  # generated ids, model order
        seen = None
        if options.repetition_penalty != 1:
            seen = torch.zeros_like(logits, dtype=torch.bool)  # (B*K, V)
            for row in range(B * K):
                seen[row, prompts[row // K].tokens] = True
        V = logits.size(-1)
        for step in range(options.max_new_tokens):
            if seen is not None:
                logits = repetition_penalty(logits, seen, options.repetition_penalty)
            if constrain is not None:
                bias = constrain(seqs)  # (B*K, V) or None
                if bias is None:
                    constrain = None
                else:
                    logits = logits + bias
            logp = torch.log_softmax(logits, dim=-1)  # (B*K, V)
            candidates = (scores.view(-1, 1) + logp).view(B, K * V)  # (B, K*V)
            top_scores, top_index = candidates.topk(2 * K, dim=-1)  # (B, 2K) each
            parents = (top_index // V).tolist()  # beam within the prompt
            tokens = (top_index % V).tolist()
            top_scores = top_scores.tolist()
            length = step + 1
            index, next_tokens, next_scores = [], [], []
            for b in range(B):
                kept = 0
                for rank in range(2 * K):
                    if done[b] or kept == K or top_scores[b][rank] == NEG_INF:
                        break
                    row, token, s = b * K + parents[b][rank], tokens[b][rank], top_scores[b][rank]
                    ends = _ends(lm, prompts[b], seqs[row], token, options)
                    if ends:
                        if rank < K:  # as HF: only a top-K pair may finish a text
                            ids = seqs[row] if ends == "eos" else seqs[row] + [token]
                            hyps[b].add(s, ids, length, ends)
                        continue
                    index.append(row)
                    next_tokens.append(token)
                    next_scores.append(s)
                    kept += 1
                for _ in range(K - kept):  # a done prompt, or too few candidates
                    index.append(b * K)
                    next_tokens.append(SPECIAL_IDS.pad)
                    next_scores.append(NEG_INF)
                best = next_scores[b * K]
                if not done[b] and (best == NEG_INF or hyps[b].done(best, length)):
                    done[b] = True
            seqs = [seqs[row] + [t] for row, t in zip(index, next_tokens, strict=True)]
            scores = torch.tensor(next_scores, device=lm.device).view(B, K)
            if all(done):
                break
            if step == options.max_new_tokens - 1:  # out of tokens: finish as they stand
                for b in range(B):
                    for k in range(K):
                        s = next_scores[b * K + k]
                        if not done[b] and s != NEG_INF:
                            hyps[b].add(s, seqs[b * K + k], length, "length")
                break
            index_t = torch.tensor(index, device=lm.device)
            state = select(state, index_t)
            ids = torch.tensor(next_tokens, device=lm.device)  # (B*K,)
            if seen is not None:
                seen = seen[index_t].scatter_(1, ids[:, None], True)
            if decoder.full(state):
                rows = [prompts[r // K].ids + seqs[r] for r in range(B * K)]
                state, logits = decoder.restart(rows, options.max_new_tokens - length)
            else:
                logits = decoder.step(state, ids)
    return [
        _result(lm, prompts[b], rank, item, options)
        for b in range(B)
        for rank, item in enumerate(hyps[b].items[: options.num_return])
    ]


def _ends(lm: LoadedLM, prompt: Prompt, seq: list[int], token: int, options) -> str | None:
    """Why the text ends with `token` after `seq` ("eos", "stop"), or None."""
    if token == lm.specials.eos and options.stop_at_eos:
        return "eos"
    if options.stop:
        text = _text(lm, prompt, seq + [token])
        backward = lm.config.backward
        if backward and cut_backward(text, options.stop)[1]:
            return "stop"
        if not backward and any(s in text for s in options.stop):
            return "stop"
    return None


def _text(lm: LoadedLM, prompt: Prompt, seq: list[int]) -> str:
    backward = lm.config.backward
    return continuation_text(lm.tokenizer, prompt, seq[::-1] if backward else seq, backward)


def _result(lm, prompt: Prompt, rank: int, item, options: GenerateOptions) -> Generation:
    score, logprob, seq, reason = item
    backward = lm.config.backward
    text = _text(lm, prompt, seq)
    if backward:
        text = cut_backward(text, options.stop)[0]
    elif options.stop:
        matcher = StopMatcher(options.stop)
        text = matcher.feed(text) + matcher.flush()
    tokens = seq[::-1] if backward else list(seq)
    return Generation(prompt.text, text, tokens, reason, prompt.index, rank, score, logprob,
                      prompt.truncated, backward)
