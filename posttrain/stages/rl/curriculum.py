"""Per-prompt pass rates for RL: skip what is solved, give hints to what always fails (Keye-VL-1.5).

After every step each prompt's group pass rate (share of samples whose reward total reaches `pass_threshold`)
is recorded. With `filter_solved`, prompts whose last pass rate was 1 are skipped when drawn: they would
give zero advantage. With `hints`, a prompt whose last pass rate was 0 moves up one hint level (up to
`max_hint_level`, 5 in the paper) and is asked with its row's `hints[level - 1]` appended; once it is solved
at least once the level stays. Rows without a `hints` column are never hinted.

The state is plain data (saved with the learner checkpoint), so a resumed stage continues with the same
levels. Knows nothing about generation or training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from posttrain.prompts import messages_of


@dataclass
class PromptRecord:
    pass_rate: float | None = None
    hint_level: int = 0


@dataclass
class Curriculum:
    filter_solved: bool = False
    hints: bool = False
    max_hint_level: int = 5
    pass_threshold: float = 0.5
    records: dict[str, PromptRecord] = field(default_factory=dict)

    def wants(self, row: dict) -> bool:
        record = self.records.get(str(row["id"]))
        return not (self.filter_solved and record is not None and record.pass_rate == 1.0)

    def prepare(self, row: dict) -> dict:
        """The row as it will be asked: with its current hint appended to the last user text."""
        level = self.records.get(str(row["id"]), PromptRecord()).hint_level
        hints = row.get("hints") or []
        if not self.hints or level == 0 or not hints:
            return row
        hint = hints[min(level, len(hints)) - 1]
        messages = [dict(m) for m in messages_of(row)]
        last = messages[-1]
        content = last["content"] if isinstance(last["content"], list) else [{"type": "text", "text": last["content"]}]
        last["content"] = [*content, {"type": "text", "text": f"\nHint: {hint}"}]
        return {**{k: v for k, v in row.items() if k != "prompt"}, "messages": messages, "hint_level": level}

    def update(self, row: dict, totals: list[float | None]) -> float:
        passed = [t is not None and t >= self.pass_threshold for t in totals]
        rate = sum(passed) / len(passed) if passed else 0.0
        record = self.records.setdefault(str(row["id"]), PromptRecord())
        record.pass_rate = rate
        if self.hints and rate == 0.0 and row.get("hints"):
            record.hint_level = min(record.hint_level + 1, self.max_hint_level, len(row["hints"]))
        return rate

    def metrics(self) -> dict[str, float]:
        seen = [r for r in self.records.values() if r.pass_rate is not None]
        if not seen:
            return {}
        return {"curriculum/solved_fraction": sum(r.pass_rate == 1.0 for r in seen) / len(seen),
                "curriculum/hopeless_fraction": sum(r.pass_rate == 0.0 for r in seen) / len(seen),
                "curriculum/hinted_prompts": float(sum(r.hint_level > 0 for r in seen))}

    def state_dict(self) -> dict:
        return {k: [r.pass_rate, r.hint_level] for k, r in self.records.items()}

    def load_state_dict(self, state: dict) -> None:
        self.records = {k: PromptRecord(rate, level) for k, (rate, level) in state.items()}
