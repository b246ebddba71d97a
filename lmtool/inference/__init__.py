"""Reading text back out of a model: generation, autocomplete, fill-mask, classification.

    from lmtool.inference import generate, stream, complete, fill_mask, classify
    generate("runs/lm", "Once upon a time", max_new_tokens=40)   # [Generation]
    stream("runs/lm", "Once upon a time")                         # text pieces as written
    complete("runs/lm", "The cat sat on", k=5)                    # [Completion], best first
    fill_mask("runs/mlm", "The cat sat on the [MASK].")          # [MaskFill] per input

(The functions are imported here, not lazily: their modules share their names, and a
submodule imported later would otherwise shadow the function of the same name.)
"""

from __future__ import annotations

from lmtool.inference.classify import classify
from lmtool.inference.complete import Completion, CompletionEngine, complete
from lmtool.inference.fill_mask import MaskFill, fill_mask
from lmtool.inference.generate import generate, stream
from lmtool.inference.generation import GenerateOptions, Generation
from lmtool.inference.runs import LoadedLM, load_lm

__all__ = [
    "Completion",
    "CompletionEngine",
    "GenerateOptions",
    "Generation",
    "LoadedLM",
    "MaskFill",
    "classify",
    "complete",
    "fill_mask",
    "generate",
    "load_lm",
    "stream",
]
