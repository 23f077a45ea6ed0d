"""Retrying, the same way wherever edge retries: a live source reopened, a Triton server asked again, a bad file
skipped and counted."""

from __future__ import annotations

BACKOFF_S = (0.25, 5.0)  # the first and the longest wait before trying again


def backoff_delay(failures: int) -> float:
    """The wait after `failures` failures in a row: 0.25, 0.5, 1, 2, 4, then 5 s."""
    return min(BACKOFF_S[0] * 2 ** (failures - 1), BACKOFF_S[1])


def worth_logging(count: int) -> bool:
    """The 1st, 2nd, 4th, 8th...: a failure that repeats all day keeps the journal readable."""
    return count & (count - 1) == 0
