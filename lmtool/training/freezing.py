"""ULMFiT's per-group rates and gradual unfreezing: pure functions of the step.

Layer groups run bottom (embeddings) to top (head); see `parameter_groups`.

- Discriminative fine-tuning (Howard & Ruder 2018, section 3.2): the top group trains at
  the schedule's rate and each group below at the rate of the one above divided by
  `factor` (2.6 in the paper). With 4 groups and factor 2.6 the multipliers are
  1/2.6^3, 1/2.6^2, 1/2.6, 1 (bottom to top).
- Gradual unfreezing (section 3.3): the top group trains first, one more group below
  it every so many steps. A frozen group's parameters keep `requires_grad=False`, so no
  gradient reaches them and the optimiser creates no state for them; they stay in the
  optimiser's parameter groups, so unfreezing needs no rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass


def discriminative_multipliers(groups: int, factor: float) -> list[float]:
    """Rate multipliers, bottom to top: factor^-(groups-1), ..., 1/factor, 1."""
    return [factor ** -(groups - 1 - i) for i in range(groups)]


@dataclass(frozen=True)
class UnfreezePlan:
    """How many of the top layer groups train at each step.

    start: groups trainable from step 0 (0: all of them);
    every: steps between unfreezing one more group below (0: never).
    ULMFiT's classifier: start=1 and every=one epoch of steps.
    """

    start: int = 0
    every: int = 0

    def trainable(self, step: int, groups: int) -> int:
        """The number of top groups that train at optimiser step `step` (0-based)."""
        if self.start <= 0:
            return groups
        more = step // self.every if self.every > 0 else 0
        return min(groups, self.start + more)
