"""The pre-training tasks: one seeded generator per task, each giving an image-text `Example`.

Every example is a user turn (images or a video, then a question) and the assistant's target text; the gold
answer and its verifier kind (`cold_start_data.tasks.KINDS`, or "caption" for text that is only scored by its
loss) let an evaluation check what a model answers. Scenes are coloured shapes on a plain canvas, so the
generator's knowledge of what it drew is the ground truth (see `cold_start_data.sources.shapes`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cold_start_data.sources.ocr import ITEMS, render_lines
from cold_start_data.sources.shapes import SIZE, COLOURS, KINDS, Shape, place, reading_order, render, where
from cold_start_data.sources.video import motion_task
from keye_protocol.grounding import format_boxes, normalize_box


@dataclass
class Example:
    task: str
    prompt: str
    target: str  # the assistant's text
    answer: str  # what an evaluation compares against (equal to target except for captions)
    kind: str  # verifier kind: count | boxes | text | caption
    images: list[Any] = field(default_factory=list)  # PIL images before the prompt text
    video: list[np.ndarray] | None = None
    fps: float = 2.0


def random_shapes(rng: random.Random, low: int = 1, high: int = 4) -> list[Shape]:
    specs = [(rng.choice(KINDS), rng.choice(list(COLOURS))) for _ in range(rng.randint(low, high))]
    return place(rng, specs)


def describe(shapes: list[Shape]) -> str:
    """'A red circle at the top left and a blue square at the centre.' (reading order)."""
    parts = [f"a {s.name()} at the {where(s.box)}" for s in reading_order(shapes)]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def caption_example(rng: random.Random) -> Example:
    shapes = random_shapes(rng)
    caption = describe(shapes)
    prompt = rng.choice(["Describe the image.", "What is in this picture?", "Write a caption for the image."])
    return Example("caption", prompt, caption, caption, "caption", [render(shapes)])


def counting_example(rng: random.Random) -> Example:
    colour = rng.choice(list(COLOURS))
    count = rng.randint(0, 5)
    others = [c for c in COLOURS if c != colour]
    specs = [(rng.choice(KINDS), colour) for _ in range(count)]
    specs += [(rng.choice(KINDS), rng.choice(others)) for _ in range(rng.randint(0 if count else 1, 3))]
    shapes = place(rng, specs)
    return Example("counting", f"How many {colour} shapes are there?", str(count), str(count), "count",
                   [render(shapes)])


def unique_shapes(rng: random.Random) -> list[Shape]:
    """1-3 shapes of different kinds, so 'the circle' names exactly one."""
    kinds = rng.sample(KINDS, rng.randint(1, 3))
    return place(rng, [(kind, rng.choice(list(COLOURS))) for kind in kinds])


def colour_example(rng: random.Random) -> Example:
    shapes = unique_shapes(rng)
    asked = rng.choice(shapes)
    return Example("colour_vqa", f"What colour is the {asked.kind}?", asked.colour, asked.colour, "text",
                   [render(shapes)])


def position_example(rng: random.Random) -> Example:
    shapes = unique_shapes(rng)
    asked = rng.choice(shapes)
    answer = where(asked.box)
    return Example("position_vqa", f"Where is the {asked.name()}?", answer, answer, "text", [render(shapes)])


def grounding_example(rng: random.Random) -> Example:
    shapes = unique_shapes(rng)
    asked = rng.choice(shapes)
    answer = format_boxes([normalize_box(asked.box, SIZE, SIZE)])
    return Example("grounding", f"Give the bounding box of the {asked.name()}.", answer, answer, "boxes",
                   [render(shapes)])


def ocr_example(rng: random.Random) -> Example:
    words = rng.sample(ITEMS, rng.randint(1, 2))
    text = " ".join(words)
    return Example("ocr", "What does the card say?", text, text, "text", [render_lines([text], rng)])


def interleaved_example(rng: random.Random) -> Example:
    """Two scenes with text between them; the answer needs both images."""
    first, second = random_shapes(rng, 1, 3), random_shapes(rng, 1, 3)
    while len(first) == len(second):
        second = random_shapes(rng, 1, 3)
    answer = "the first" if len(first) > len(second) else "the second"
    return Example("interleaved", "Which image has more shapes, the first or the second?", answer, answer, "text",
                   [render(first), render(second)])


def video_example(rng: random.Random) -> Example:
    task = motion_task(rng)
    return Example("video", task.prompt, task.answer, task.answer, "text", video=task.video, fps=task.fps)


TASKS: dict[str, Callable[[random.Random], Example]] = {
    "caption": caption_example,
    "counting": counting_example,
    "colour_vqa": colour_example,
    "position_vqa": position_example,
    "grounding": grounding_example,
    "ocr": ocr_example,
    "interleaved": interleaved_example,
    "video": video_example,
}


def draw_examples(task: str, n: int, seed: int) -> list[Example]:
    """`n` examples of one task from its own seeded stream (tasks never share a stream)."""
    if task not in TASKS:
        raise ValueError(f"unknown pre-training task {task!r}; choose from {sorted(TASKS)}")
    rng = random.Random(f"{seed}:{task}")
    return [TASKS[task](rng) for _ in range(n)]
