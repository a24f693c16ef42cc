"""Short synthetic videos as frame arrays: a moving ball (which way does it go?) and six shuffled frames
whose original order must be recovered (the paper's rule-built video task).

Frames are [112, 112, 3] uint8 arrays at 2 fps, so the processor keeps every frame. The solver reads the
ball's position in each frame (it drew them) and reasons from it. In the ordering task the prompt states the
direction of motion, otherwise the order would be ambiguous (forward and backward both fit).
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from cold_start_data.sources.shapes import COLOURS
from cold_start_data.tasks import Solution, Task

SIZE = 112
RADIUS = 7
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def _frame(centre: tuple[int, int], colour: str, block: tuple[int, int, int, int]) -> np.ndarray:
    image = Image.new("RGB", (SIZE, SIZE), (235, 240, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle(block, fill=(120, 120, 120))  # a static object, so frames are not all alike
    x, y = centre
    draw.ellipse((x - RADIUS, y - RADIUS, x + RADIUS, y + RADIUS), fill=COLOURS[colour])
    return np.asarray(image, dtype=np.uint8).copy()


def _track(rng: random.Random, direction: str, frames: int) -> list[tuple[int, int]]:
    dx, dy = DIRECTIONS[direction]
    step = rng.randint(8, 12)
    span = step * (frames - 1)
    lo, hi = RADIUS + 2, SIZE - RADIUS - 2
    start_along = rng.randint(lo, hi - span) if dx + dy > 0 else rng.randint(lo + span, hi)
    across = rng.randint(lo, hi)
    along = [start_along + (dx + dy) * step * k for k in range(frames)]
    return [(a, across) if dx else (across, a) for a in along]


def _clip(rng: random.Random, frames: int):
    direction = rng.choice(list(DIRECTIONS))
    colour = rng.choice(["red", "blue", "green"])
    x, y = rng.randint(0, SIZE - 16), rng.randint(0, SIZE - 16)
    track = _track(rng, direction, frames)
    return direction, colour, track, [_frame(c, colour, (x, y, x + 10, y + 10)) for c in track]


def _norm(point: tuple[int, int]) -> tuple[int, int]:
    return int(point[0] * 1000 / SIZE), int(point[1] * 1000 / SIZE)


def motion_task(rng: random.Random) -> Task:
    direction, colour, track, frames = _clip(rng, frames=8)
    (x0, y0), (x1, y1) = _norm(track[0]), _norm(track[-1])
    axis, grows = ("x", x1 > x0) if direction in ("left", "right") else ("y", y1 > y0)
    steps = [f"In the first frame the {colour} ball is at ({x0}, {y0}) on the 0-1000 scale.",
             f"In the last frame it is at ({x1}, {y1}).",
             f"{axis} {'grows' if grows else 'shrinks'}, so the ball moves {direction}."]
    return Task("video_motion", f"In which direction does the {colour} ball move: left, right, up or down?",
                direction, "text", Solution(steps, f"\\boxed{{{direction}}}"), video=frames, fps=2.0,
                meta={"direction": direction})


def order_task(rng: random.Random) -> Task:
    direction, colour, track, frames = _clip(rng, frames=6)
    shown = list(range(6))
    while shown == sorted(shown):  # a shuffle that happens to be the identity teaches nothing
        rng.shuffle(shown)
    shown_frames = [frames[k] for k in shown]
    # The answer lists, for each original position, which shown frame (1-based) holds it.
    order = [shown.index(k) + 1 for k in range(6)]
    axis = 0 if direction in ("left", "right") else 1
    coords = [_norm(track[k])[axis] for k in shown]
    name = "x" if axis == 0 else "y"
    steps = [f"The {colour} ball's {name} in shown frames 1-6: " + ", ".join(map(str, coords)) + ".",
             f"Moving {direction} means {name} {'increases' if direction in ('right', 'down') else 'decreases'} "
             f"over time, so sorting gives the frames in the order {','.join(map(str, order))}."]
    answer = ",".join(map(str, order))
    prompt = (f"The 6 frames of this video are shuffled. The {colour} ball moves steadily {direction}. "
              f"Give the original order as the shown frame numbers (1-6), separated by commas.")
    return Task("video_order", prompt, answer, "order", Solution(steps, f"\\boxed{{{answer}}}"),
                video=shown_frames, fps=2.0, meta={"direction": direction})
