"""Seeds derived from several integers, so that every random choice of a run (data
order, masking, dropout) is a pure function of (seed, epoch, step, rank, ...)."""

from __future__ import annotations

import numpy as np


def seed_for(*parts: int) -> int:
    """A 63-bit seed mixing several integers (seed, step, rank, ...) with no collisions
    between nearby tuples, unlike e.g. seed + step."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]) >> 1
