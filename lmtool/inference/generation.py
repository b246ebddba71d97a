"""What generation is asked for (GenerateOptions) and what it gives back (Generation).

Their own module so that every decoder (sampling in inference/generate.py, beam search
in inference/beam.py, the autocomplete engine) can use them without importing another.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields, replace

from lmtool.errors import BadInput

DEFAULT_TEMPERATURE = 0.8
STOP_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class GenerateOptions:
    """How to generate. None means "not given" (so contradictions can be told apart
    from defaults); `resolved()` fills the defaults in."""

    max_new_tokens: int = 100  # 0 generates nothing
    temperature: float | None = None  # 0: greedy; None: 0.8 when sampling
    top_k: int | None = None  # sample among the k most likely tokens
    top_p: float | None = None  # ... among the most likely tokens holding this mass
    min_p: float | None = None  # ... among tokens at least min_p x the most likely one
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the text
    beams: int = 1  # > 1: beam search (deterministic, no sampling options)
    length_penalty: float | None = None  # beam score = log-prob / length ** this (1.0)
    num_return: int | None = None  # beam search: how many of the best to return (1)
    num_samples: int = 1  # sampling: independent samples per prompt
    stop: tuple[str, ...] = ()  # stop before any of these strings (not included)
    seed: int | None = None  # sampling: None draws a fresh one (`seeded`)
    stop_at_eos: bool = True  # [EOS] ends the text; else it reads as a newline

    @property
    def greedy(self) -> bool:
        return self.beams == 1 and self.temperature == 0

    def seeded(self) -> GenerateOptions:
        """These options with a seed: the one given, else a fresh one from the OS (so
        unseeded sampling differs from run to run, and the seed can still be reported
        and given again to repeat a run)."""
        return self if self.seed is not None else replace(self, seed=secrets.randbits(32))

    def resolved(self) -> GenerateOptions:
        self.validate()
        return replace(
            self.seeded(),
            temperature=DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            length_penalty=1.0 if self.length_penalty is None else self.length_penalty,
            num_return=1 if self.num_return is None else self.num_return,
            stop=tuple(self.stop),
        )

    def validate(self) -> None:
        """Raise one BadInput naming every problem and its flag."""
        problems = []
        if self.max_new_tokens < 0:
            problems.append("--max-new-tokens must be >= 0")
        if self.temperature is not None and self.temperature < 0:
            problems.append("--temperature must be >= 0 (0 is greedy)")
        if self.top_k is not None and self.top_k < 1:
            problems.append("--top-k must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            problems.append("--top-p must be in (0, 1]")
        if self.min_p is not None and not 0 <= self.min_p < 1:
            problems.append("--min-p must be in [0, 1)")
        if self.repetition_penalty <= 0:
            problems.append("--repetition-penalty must be > 0 (1 is none)")
        if self.beams < 1:
            problems.append("--beams must be >= 1")
        if self.num_samples < 1:
            problems.append("--num-samples must be >= 1")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append("--stop needs a non-empty string")
        if self.beams > 1:
            sampling = [
                flag for flag, given in (
                    ("--temperature", self.temperature not in (None, 0)),
                    ("--top-k", self.top_k is not None),
                    ("--top-p", self.top_p is not None),
                    ("--min-p", self.min_p is not None),
                    ("--num-samples", self.num_samples != 1),
                ) if given
            ]
            if sampling:
                problems.append(
                    f"--beams {self.beams} searches for the most likely text and does not "
                    f"sample: drop {', '.join(sampling)} (or use --beams 1)"
                )
            if self.num_return is not None and not 1 <= self.num_return <= self.beams:
                problems.append(f"--num-return must be between 1 and --beams ({self.beams})")
        else:
            given = [flag for flag, value in (("--length-penalty", self.length_penalty),
                                              ("--num-return", self.num_return))
                     if value is not None]
            if given:
                problems.append(f"{' and '.join(given)} need beam search (--beams N, N > 1)")
        if problems:
            raise BadInput("; ".join(problems))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class Generation:
    """One generated text. `text` is the continuation alone, in reading order (for a
    backward run: the text that comes before the prompt)."""

    prompt: str
    text: str
    tokens: list[int]  # ids generated, reading order (with a stop string's tokens)
    stop_reason: str  # "eos", "stop" or "length"
    index: int = 0  # which prompt, in input order
    sample: int = 0  # which sample of it (sampling), or rank (beam search: 0 is best)
    score: float | None = None  # beam search: length-normalised log-probability
    logprob: float | None = None  # beam search: summed log-probability of the tokens
    truncated: int = 0  # prompt tokens left out to fit the context
    backward: bool = False
    seed: int | None = None  # sampling: the seed that, given again, repeats this text

    @property
    def full_text(self) -> str:
        """Prompt and continuation in reading order."""
        return self.text + self.prompt if self.backward else self.prompt + self.text

    def to_dict(self) -> dict:
        row = {
            "prompt": self.prompt, "text": self.text, "tokens": self.tokens,
            "stop_reason": self.stop_reason, "index": self.index, "sample": self.sample,
        }
        if self.score is not None:
            row["score"] = round(self.score, 6)
            row["logprob"] = round(self.logprob, 6)
        if self.truncated:
            row["truncated"] = self.truncated
        if self.seed is not None:
            row["seed"] = self.seed
        return row


__all__ = ["DEFAULT_TEMPERATURE", "STOP_REASONS", "GenerateOptions", "Generation"]


