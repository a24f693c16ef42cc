"""Task sources: deterministic generators of verifiable problems, one `rng -> Task` function per name.

Every source draws only from the `random.Random` it is given, so a seed fixes the task stream. Which sources
feed which mode is the mixer's business (`cold_start_data.config`); user data comes from
`cold_start_data.user_data` instead.
"""

from __future__ import annotations

import random
from typing import Callable

from cold_start_data.sources.arithmetic import addition_only_task, arithmetic_task
from cold_start_data.sources.ocr import price_list_task
from cold_start_data.sources.shapes import counting_task, grounding_task
from cold_start_data.sources.small_detail import small_detail_task
from cold_start_data.sources.video import motion_task, order_task
from cold_start_data.sources.word_problems import word_problem_task
from cold_start_data.tasks import Task

SOURCES: dict[str, Callable[[random.Random], Task]] = {
    "arithmetic": arithmetic_task,
    "addition": addition_only_task,  # one- and two-digit sums only (tiny models)
    "word_problem": word_problem_task,
    "counting": counting_task,
    "grounding": grounding_task,
    "ocr_math": price_list_task,
    "small_detail": small_detail_task,  # needs a tool plan: the agentic mode's source
    "video_motion": motion_task,
    "video_order": order_task,
}
VIDEO_SOURCES = ("video_motion", "video_order")
TOOL_SOURCES = ("small_detail",)  # sources whose tasks carry a ToolPlan (the agentic mode needs one)


def make_task(name: str, rng: random.Random) -> Task:
    if name not in SOURCES:
        raise ValueError(f"unknown task source {name!r}; valid sources are {sorted(SOURCES)}")
    return SOURCES[name](rng)
