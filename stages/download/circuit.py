"""Per-host circuit breaker whose verdicts do not depend on timing.

Rule: a row is failed `host_circuit_open` when the `threshold` rows of the same host just before
it, in partition order, all ended in a transient failure (see reasons.CIRCUIT_COUNTED) or were
themselves cut by the circuit. Once open, a host's circuit stays open for the rest of the
partition; the cut rows are retryable later (`tolpipe retry download --reason host_circuit_open`).

Because the rule reads outcomes in partition order, the same server behaviour gives the same
manifest however the fetch threads interleave. To save requests, a host whose latest attempts
(in time order) failed `threshold` times in a row is *suspected*: while suspected, only its
earliest undecided row is fetched (a probe), until a success clears the suspicion or the
in-order rule opens the circuit. A row that was fetched anyway but falls under the rule is
reported as cut (its outcome is discarded), which keeps the result independent of timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.download import reasons as R


@dataclass
class HostCircuit:
    threshold: int
    rows: list[int] = field(default_factory=list)  # row indices of this host, partition order
    position: int = 0  # rows[:position] are decided by the rule
    streak: int = 0  # counted failures just before rows[position]
    recent_failures: int = 0  # consecutive failed attempts in time order (the suspicion)

    @property
    def open(self) -> bool:
        return self.streak >= self.threshold

    @property
    def suspected(self) -> bool:
        return self.recent_failures >= self.threshold

    def frontier(self) -> int | None:
        """The earliest row not yet decided by the rule (the probe while suspected)."""
        return self.rows[self.position] if self.position < len(self.rows) else None

    def attempt_finished(self, reason: str | None) -> None:
        """Time-order bookkeeping of single attempts, for the suspicion only."""
        if reason in R.CIRCUIT_COUNTED:
            self.recent_failures += 1
        else:
            self.recent_failures = 0

    def advance(self, final_reasons: dict[int, str | None]) -> list[int]:
        """Walk the rule forward over rows whose outcome is final; return rows it cuts.

        `final_reasons` maps row index -> final reason (None for ok) for rows that are final.
        """
        cut: list[int] = []
        while self.position < len(self.rows):
            row = self.rows[self.position]
            if self.open:
                cut.append(row)
                self.streak += 1
            elif row in final_reasons:
                counted = final_reasons[row] in R.CIRCUIT_COUNTED
                self.streak = self.streak + 1 if counted else 0
            else:
                break
            self.position += 1
        return cut
