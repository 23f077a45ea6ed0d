"""What every backend offers, and the one helper they share."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import EdgeError


class Backend(Protocol):
    def run(self, batch: np.ndarray) -> np.ndarray: ...


def run_in_fixed_batches(run, batch: np.ndarray, fixed_batch: int) -> np.ndarray:
    """run(batch), in chunks of the model's batch size when its graph takes only that one (fixed_batch; 0: any)."""
    if not fixed_batch or len(batch) == fixed_batch:
        return run(batch)
    if len(batch) % fixed_batch:
        raise EdgeError(f"batch of {len(batch)} does not split into the model's batch {fixed_batch}")
    return np.concatenate([run(chunk) for chunk in np.split(batch, len(batch) // fixed_batch)])
