"""A kept sample of the mixture (`Record`) and the build's bookkeeping (`BuildStats`): what was tried, kept and
rejected, per bucket and source, with the reasons. Knows nothing about files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cold_start_data.user_data import RowError


@dataclass
class Record:
    id: str
    bucket: str  # mode name, or "video"
    mode: str
    source: str
    teacher: str
    messages: list[dict]  # the user turn(s) with the mode suffix, then the assistant turn; vision items hold objects
    response: str  # the assistant turn's text (vision items left out)
    answer: str
    kind: str
    verified: bool  # the response passed the verifier (False only for deliberate flaws)
    flawed: bool
    reasoned: bool  # the response contains reasoning (auto_think: what the judge decided)


@dataclass
class BuildStats:
    attempted: Counter = field(default_factory=Counter)  # (bucket, source) -> tasks drawn
    kept: Counter = field(default_factory=Counter)  # (bucket, mode, source) -> records
    rejected: Counter = field(default_factory=Counter)  # (bucket, source, category) -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # category -> a few full reasons
    sampled: Counter = field(default_factory=Counter)  # source -> teacher paths sampled
    verified_paths: Counter = field(default_factory=Counter)  # source -> of which verified
    flawed: Counter = field(default_factory=Counter)  # source -> deliberately flawed records
    user_errors: list[RowError] = field(default_factory=list)
    user_rejected: list[dict] = field(default_factory=list)  # valid user rows the build still rejected

    def reject(self, bucket: str, source: str, reason: str, where: str | None = None) -> None:
        category = reason.split(":")[0].strip()[:60] or "rejected"
        self.rejected[(bucket, source, category)] += 1
        examples = self.examples.setdefault(category, [])
        if len(examples) < 3:
            examples.append(reason)
        if where is not None:  # a user row: its line and reason go into the report
            self.user_rejected.append({"where": where, "reason": reason})
