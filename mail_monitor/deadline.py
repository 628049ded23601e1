"""One clock for a whole run, so no network step can outlive the run's deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class DeadlineExceeded(TimeoutError):
    """The run's overall deadline has passed."""


@dataclass
class Deadline:
    """One clock for a whole run, so no sum of step timeouts can outlast it."""

    seconds: float
    step_timeout: float = 30.0
    start: float = field(default_factory=time.monotonic)

    @property
    def at(self) -> float:
        return self.start + self.seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def timeout(self, limit: float | None = None) -> float:
        """A socket timeout for the next step: the step limit, cut to what is left of the run."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceeded(f"run deadline of {self.seconds:g}s reached")
        return max(0.01, min(left, self.step_timeout if limit is None else limit))

    def sub(self, seconds: float) -> Deadline:
        """A deadline that ends ``seconds`` from now, but never later than this one."""
        end = min(self.at, time.monotonic() + seconds)
        now = time.monotonic()
        return Deadline(end - now, self.step_timeout, now)
