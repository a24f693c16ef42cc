"""What a teacher hands back: the response it stands behind, or the reason it has none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Candidate:
    response: str  # the full response, in the format of the requested mode
    teacher: str
    flawed: bool = False  # a deliberate systematic flaw: wrong on purpose, kept unverified
    sandbox_images: list[list[Any]] = field(default_factory=list)  # per code step, agentic only


@dataclass
class TeacherResult:
    candidate: Candidate | None
    reason: str = ""  # why nothing was kept
    sampled: int = 0  # paths sampled and checked by the teacher itself (model: n; agentic: 1)
    verified: int = 0  # of which verified
