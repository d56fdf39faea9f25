"""The outcome of a chaos run: a row per stage (expected, counted, lost, duplicated), the
bad input found in each DLQ, and the verdict (``infra/chaos_count.py`` fills it in)."""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    stage: str
    expected: int
    delivered: int
    duplicates: int = 0

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.delivered)


@dataclass
class Tally:
    accepted: int
    rows: list[Row] = field(default_factory=list)
    dlq_rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    misfiled: int = 0  # bad input in a DLQ with another reason, or none
    stuck: int = 0  # report workflows neither finished nor dead-lettered
    restarts: int = 0  # worker processes lost that the run did not kill
    outcomes: Counter = field(default_factory=Counter)  # DLQ reasons, report outcomes

    @property
    def lost(self) -> int:
        return sum(r.missing for r in self.rows) + self.stuck

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.rows)

    @property
    def dropped(self) -> int:
        return sum(r.missing for r in self.dlq_rows)

    @property
    def ok(self) -> bool:
        return self.lost == self.duplicates == self.dropped == self.misfiled == self.restarts == 0

    def table(self) -> str:
        lines = [f"{'stage':<46} {'expected':>8} {'counted':>8} {'lost':>6} {'dup':>5}"]
        for row in self.rows:
            lines.append(
                f"{row.stage:<46} {row.expected:>8} {row.delivered:>8} {row.missing:>6}"
                f" {row.duplicates:>5}"
            )
        lines.append(f"{'bad input (per subscriber)':<46} {'sent':>8} {'in DLQ':>8} {'dropped':>6}")
        for row in self.dlq_rows:
            lines.append(f"{row.stage:<46} {row.expected:>8} {row.delivered:>8} {row.missing:>6}")
        lines.append(f"{'outcomes (dead-letter reason, report workflow)':<46} {'count':>8}")
        lines += [f"{k:<46} {v:>8}" for k, v in sorted(self.outcomes.items())]
        lines += [f"note: {n}" for n in self.notes]
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(
            f"lost={self.lost} duplicates={self.duplicates} dropped={self.dropped}"
            f" wrong-reason={self.misfiled} worker-restarts={self.restarts} {verdict}"
        )
        return "\n".join(lines)

    def write_json(self, path: Path, done: list[str]) -> None:
        """The run's figures and the faults ``done``, for ``python -m infra.chaos --json``."""
        path.write_text(json.dumps({
            "lost": self.lost, "duplicates": self.duplicates, "dropped": self.dropped,
            "wrong_reason": self.misfiled, "worker_restarts": self.restarts,
            "faults": done, "outcomes": dict(self.outcomes),
            "rows": [vars(r) for r in self.rows + self.dlq_rows], "notes": self.notes,
        }, indent=2))  # fmt: skip
