"""When and how much: the cubic sparsity schedule of Zhu & Gupta (2017).

s(t) = s_f + (s_i - s_f) * (1 - (t - start) / (end - start))^3 between `start` and `end` (optimiser
steps); masks are recomputed at `events` evenly spaced steps, the last one at `end` with s = s_f.
"""

from __future__ import annotations

import math


class CubicSchedule:
    def __init__(self, final_sparsity: float, start: int, end: int, events: int = 100, initial_sparsity: float = 0.0):
        if not 0 <= initial_sparsity <= final_sparsity < 1:
            raise ValueError("sparsities must satisfy 0 <= initial <= final < 1")
        if not 0 <= start <= end:
            raise ValueError("the schedule needs 0 <= start <= end")
        self.final, self.initial = final_sparsity, initial_sparsity
        self.start, self.end, self.events = start, end, max(1, events)

    def sparsity_at(self, step: int) -> float:
        if step <= self.start and self.end > self.start:
            return self.initial
        if step >= self.end:
            return self.final
        progress = (step - self.start) / (self.end - self.start)
        return self.final + (self.initial - self.final) * (1 - progress) ** 3

    def is_event(self, step: int) -> bool:
        span = self.end - self.start
        if span == 0:
            return step == self.start
        interval = max(1, math.ceil(span / self.events))
        return self.start < step <= self.end and ((step - self.start) % interval == 0 or step == self.end)

    def state_dict(self) -> dict:
        return {"final": self.final, "initial": self.initial, "start": self.start, "end": self.end,
                "events": self.events}

    @classmethod
    def from_state_dict(cls, state: dict) -> "CubicSchedule":
        return cls(state["final"], state["start"], state["end"], state["events"], state["initial"])
