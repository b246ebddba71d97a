"""An imported tokenizer's special ids and conventions, recorded in the run.

lmtool's own tokenizers put [PAD] ... [SEP] at ids 0..6 and add nothing to a text; a
published tokenizer has its own ids and adds its own template (Llama: <s> before;
BERT: [CLS] before, [SEP] after; GPT-2: nothing). The run records both, so the model
reads exactly the ids `transformers`' tokenizer would give it.
"""

from __future__ import annotations

NAMES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")
# Usual spellings, tried after tokenizer_config.json and config.json have had their say.
SPELLINGS = {
    "pad": ("[PAD]", "<pad>", "<|padding|>"),
    "unk": ("[UNK]", "<unk>", "<|unknown|>"),
    "bos": ("<s>", "<|begin_of_text|>", "<|endoftext|>", "[CLS]"),
    "eos": ("</s>", "<|end_of_text|>", "<|endoftext|>", "[SEP]"),
    "mask": ("[MASK]", "<mask>"),
    "cls": ("[CLS]", "<s>", "<|endoftext|>"),
    "sep": ("[SEP]", "</s>", "<|endoftext|>"),
}


def _token_text(value) -> str | None:
    """tokenizer_config.json writes a token as a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def template(tok) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after a text."""
    bare = tok.encode("a", add_special_tokens=False).ids
    full = tok.encode("a").ids
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    return [], []


def find_specials(tok, hf_config: dict, tokenizer_config: dict) -> dict:
    """{"pad": id, ..., "sep": id, "start": [...], "end": [...], "others": [...]}.

    A role the tokenizer has no token for borrows one it has (GPT-2's <|endoftext|> is
    its bos, eos, pad ...): each id only has to be a real row of the embedding."""
    found: dict[str, int] = {}
    for name in NAMES:
        text = _token_text(tokenizer_config.get(f"{name}_token"))
        ids = [tok.token_to_id(text)] if text else []
        ids.append(hf_config.get(f"{name}_token_id"))
        ids += [tok.token_to_id(s) for s in SPELLINGS[name]]
        ids = [i[0] if isinstance(i, list) and i else i for i in ids]
        chosen = next((i for i in ids if isinstance(i, int) and i >= 0), None)
        if chosen is not None:
            found[name] = chosen
    fallback = found.get("eos", found.get("sep", found.get("bos", 0)))
    specials: dict = {name: found.get(name, fallback) for name in NAMES}
    specials["start"], specials["end"] = template(tok)
    added = tok.get_added_tokens_decoder() if hasattr(tok, "get_added_tokens_decoder") else {}
    known = {specials[n] for n in NAMES}
    specials["others"] = sorted(i for i, t in added.items() if t.special and i not in known)
    return specials
