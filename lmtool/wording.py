"""Small helpers for messages a person reads."""

from __future__ import annotations


def count(n: int, noun: str, many: str | None = None) -> str:
    """"1 document", "2,095 documents", count(3, "binary file") → "3 binary files"."""
    return f"{n:,} {plural(n, noun, many)}"


def plural(n: int, noun: str, many: str | None = None) -> str:
    """The noun for n things, without the number: "field" for 1, "fields" otherwise
    (`many` when adding an s will not do)."""
    return noun if n == 1 else many or noun + "s"


def listing(names: list[str], shown: int = 3) -> str:
    """"a, b, c and 4 more": the first few names of a long list."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
