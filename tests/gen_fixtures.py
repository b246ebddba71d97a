"""Small models and tokenizers for the generation tests (not a test file)."""

from __future__ import annotations

import torch
from torch import nn

from lmtool.inference.runs import LoadedLM
from lmtool.models import ModelConfig, build_model
from lmtool.models.base import LanguageModel
from lmtool.models.state import LSTMState
from lmtool.text.specials import SPECIAL_TOKENS


def word_tokenizer(vocab_size: int):
    """A whitespace word-level tokenizer with words t7 ... t{V-1} after the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIAL_TOKENS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def tiny_lm(arch="transformer", positions="rotary", vocab=37, context=16, seed=0,
            backward=False, objective="causal") -> LoadedLM:
    """An untrained tiny model (its predictions are arbitrary but fixed by the seed)."""
    config = ModelConfig(arch=arch, objective=objective, vocab_size=vocab, context=context,
                         layers=2, heads=2, dim=16, hidden=24, dropout=0.0,
                         positions=positions, backward=backward)
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():  # sharper than the initialisation: fewer near-ties
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return LoadedLM(model, word_tokenizer(vocab), torch.device("cpu"), torch.float32)


class TableLM(LanguageModel):
    """A model written by hand: the next token's logits come from `table` (V, V),
    indexed by the last token (a bigram model), or, with `script`, the i-th generated
    token is script[i] whatever came before. Carries an LSTMState (only its length)."""

    def __init__(self, table: torch.Tensor, script: list[int] | None = None, prompt_len=1):
        super().__init__()
        V = table.size(0)
        self.config = ModelConfig(arch="lstm", vocab_size=V, context=64, layers=1,
                                  dim=4, hidden=4, dropout=0.0)
        self.table = table
        self.script = script
        self.prompt_len = prompt_len
        self.lm_head = nn.Identity()
        self.dummy = nn.Parameter(torch.zeros(1))  # a device and dtype for callers

    def initial_state(self, batch_size: int, **options) -> LSTMState:
        return LSTMState([(torch.zeros(1, batch_size, 1), torch.zeros(1, batch_size, 1))])

    def encode(self, idx, state=None):
        B, T = idx.shape
        start = state.length if state is not None else 0
        if state is not None:
            state.length += T
        if self.script is None:
            return self.table[idx]  # (B, T, V)
        V = self.table.size(0)
        out = torch.full((B, T, V), -20.0)
        for t in range(T):
            i = start + t + 1 - self.prompt_len  # the generated token this position predicts
            if 0 <= i < len(self.script):
                out[:, t, self.script[i]] = 20.0
        return out


def table_lm(table, tokenizer, **kwargs) -> LoadedLM:
    return LoadedLM(TableLM(table, **kwargs), tokenizer, torch.device("cpu"), torch.float32)


def save_run(lm: LoadedLM, path):
    """Write `lm` as a run directory (what `pretrain` leaves), for CLI tests."""
    from lmtool.checkpoint import save_checkpoint

    save_checkpoint(path, model=lm.model, config={"model": lm.config.to_dict()},
                    tokenizer_json=lm.tokenizer.to_str(), metrics=[])
    return path


def successor_table(V: int) -> torch.Tensor:
    """A bigram table where t_i is followed by t_(i+1) (t_(V-1) by [EOS])."""
    table = torch.full((V, V), -10.0)
    first = len(SPECIAL_TOKENS)
    table[3, first] = 10.0  # after [EOS] (a document start): the first word
    for i in range(first, V - 1):
        table[i, i + 1] = 10.0
    table[V - 1, 3] = 10.0
    table[1, first] = 10.0  # after [UNK] (a word being typed): start again
    return table


def planted_masked_lm(vocab=24, steps=400, seed=0) -> LoadedLM:
    """A tiny masked model trained (in a few seconds) to know two facts: t20 is always
    followed by t21, and t22 by t23. The other tokens are random."""
    config = ModelConfig(objective="masked", vocab_size=vocab, context=12, layers=2,
                         heads=2, dim=32, dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    first = len(SPECIAL_TOKENS)
    for _ in range(steps):
        x = torch.randint(first, vocab, (32, 12), generator=g)  # (B, T)
        where = torch.randint(1, 11, (32,), generator=g)
        fact = torch.randint(0, 2, (32,), generator=g) * 2  # "t20 t21" or "t22 t23"
        x[torch.arange(32), where - 1] = 20 + fact  # planted at a random place
        x[torch.arange(32), where] = 21 + fact
        mask = torch.rand(32, 12, generator=g) < 0.15
        mask[torch.arange(32), where] = True  # always ask for the planted token too
        inputs = x.masked_fill(mask, 4)  # [MASK]
        loss = torch.nn.functional.cross_entropy(model(inputs, where=mask), x[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return LoadedLM(model, word_tokenizer(vocab), torch.device("cpu"), torch.float32)


def trained_lm(tmp_path, lines: list[str], kind="bpe", arch="transformer", vocab=400,
               steps=300, seed=0) -> LoadedLM:
    """A tiny causal model trained (in a few seconds) on `lines`, one document each,
    with a tokenizer of `kind` trained on them too."""
    from lmtool.text.specials import SPECIAL_IDS
    from lmtool.text.tokenizer import train_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = train_tokenizer([corpus], kind=kind, vocab_size=vocab, min_frequency=1,
                          document="line")
    stream = []
    for line in lines:  # each document followed by [EOS], as in the shards
        stream += [*tok.encode(line).ids, SPECIAL_IDS.eos]
    data = torch.tensor(stream)
    T = 48 if kind == "char" else 24
    # At width 16 the tied LSTM stalls near a unigram loss (2.6 here, against 0.5 at
    # width 32) and what it writes after a word is luck: give it 32.
    dim = 32 if arch == "lstm" else 16
    config = ModelConfig(arch=arch, vocab_size=tok.get_vocab_size(), context=64, layers=2,
                         heads=2, dim=dim, hidden=2 * dim, dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - T - 1, (16,), generator=g)
        x = torch.stack([data[s : s + T + 1] for s in starts.tolist()])  # (B, T + 1)
        logits = model(x[:, :-1])  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    return LoadedLM(model, tok, torch.device("cpu"), torch.float32)
