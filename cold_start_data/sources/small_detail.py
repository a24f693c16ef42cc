"""Images whose key detail is tiny, so cropping and zooming helps: the agentic ("think with image") source.

A 448 px scene of large distractor shapes holds one small grey frame; inside it sits either one 4 px dot
(question: its colour) or a few 3 px red dots (question: how many). The solver knows where the frame is and
writes Python that crops it, zooms 4x (saving the zoom, which becomes an image in the context) and prints a
measurement. The printed text, not the solver, decides the answer (`ToolPlan.read_output`), so a sample is
only right when its code really ran. This module knows nothing about the sandbox that runs the code.
"""

from __future__ import annotations

import random
import re

from PIL import ImageDraw

from cold_start_data.sources.shapes import COLOURS, KINDS, place, render, where
from cold_start_data.tasks import Solution, Task, ToolPlan

SIZE = 448
FRAME = 40  # side of the grey frame, pixels
ZOOM = 4
RED = COLOURS["red"]


def _frame_box(rng: random.Random, shapes) -> tuple[int, int, int, int]:
    for _ in range(500):
        x, y = rng.randint(8, SIZE - FRAME - 8), rng.randint(8, SIZE - FRAME - 8)
        box = (x, y, x + FRAME, y + FRAME)
        if all(box[2] + 6 <= s.box[0] or s.box[2] + 6 <= box[0] or box[3] + 6 <= s.box[1] or s.box[3] + 6 <= box[1]
               for s in shapes):
            return box
    raise RuntimeError("no room for the detail frame")


def _scene(rng: random.Random):
    specs = [(rng.choice(KINDS), rng.choice(list(COLOURS))) for _ in range(rng.randint(3, 7))]
    shapes = place(rng, specs, size=SIZE, lo=40, hi=90, gap=12)
    frame = _frame_box(rng, shapes)
    image = render(shapes, size=SIZE)
    draw = ImageDraw.Draw(image)
    draw.rectangle((frame[0], frame[1], frame[2] - 1, frame[3] - 1), outline=(150, 150, 150), width=1)
    return image, draw, frame


def crop_code(frame: tuple[int, int, int, int], measure: str) -> str:
    x1, y1, x2, y2 = frame
    return (f"from PIL import Image\n"
            f"crop = image.crop(({x1}, {y1}, {x2}, {y2}))\n"
            f"zoom = crop.resize((crop.width * {ZOOM}, crop.height * {ZOOM}), Image.NEAREST)\n"
            f"zoom.save('zoom.png')\n{measure}")


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    """The named colour closest to an RGB triple.

    >>> nearest_colour((200, 40, 35))
    'red'
    """
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], rgb)))


def _read_colour(stdout: str) -> str | None:
    match = re.search(r"\((\d+), (\d+), (\d+)\)", stdout)
    return nearest_colour(tuple(int(v) for v in match.groups())) if match else None


def _read_count(stdout: str) -> str | None:
    match = re.search(r"-> (\d+) dots", stdout)
    return match.group(1) if match else None


def colour_task(rng: random.Random) -> Task:
    image, draw, frame = _scene(rng)
    colour = rng.choice([c for c in COLOURS if c != "black"])
    cx, cy = (frame[0] + frame[2]) // 2, (frame[1] + frame[3]) // 2
    draw.rectangle((cx - 2, cy - 2, cx + 1, cy + 1), fill=COLOURS[colour])
    measure = ("r, g, b = zoom.getpixel((zoom.width // 2, zoom.height // 2))[:3]\n"
               "print(f'centre colour: ({r}, {g}, {b})')")
    tool = ToolPlan(crop_code(frame, measure),
                    intro=f"The dot inside the grey frame at the {where(frame, SIZE)} is only 4 pixels wide; "
                          f"I crop the frame and zoom in {ZOOM}x to read its colour.",
                    read_output=_read_colour,
                    explain=lambda out, answer: [f"The zoomed centre pixel is {out.split(': ')[-1].strip()}, "
                                                 f"which is {answer}."])
    steps = [f"The tiny dot in the grey frame at the {where(frame, SIZE)} is {colour}."]
    return Task("small_detail", "What colour is the tiny dot inside the small grey frame?", colour, "text",
                Solution(steps, f"\\boxed{{{colour}}}"), images=[image], tool=tool,
                meta={"question": "colour", "frame": list(frame)})


def dots_task(rng: random.Random) -> Task:
    image, draw, frame = _scene(rng)
    count = rng.randint(1, 5)
    cells = rng.sample([(i, j) for i in range(4) for j in range(4)], count)  # 4x4 grid of 9 px cells
    for i, j in cells:
        x, y = frame[0] + 3 + 9 * i + rng.randint(0, 3), frame[1] + 3 + 9 * j + rng.randint(0, 3)
        draw.rectangle((x, y, x + 2, y + 2), fill=RED)
    measure = ("import numpy as np\n"
               "a = np.asarray(crop).astype(int)\n"
               f"red = int(((abs(a[..., 0] - {RED[0]}) < 10) & (abs(a[..., 1] - {RED[1]}) < 10)"
               f" & (abs(a[..., 2] - {RED[2]}) < 10)).sum())\n"
               "print(f'red pixels: {red} -> {red // 9} dots')")
    tool = ToolPlan(crop_code(frame, measure),
                    intro=f"The red dots inside the grey frame at the {where(frame, SIZE)} are 3 pixels wide; "
                          f"I crop the frame, zoom in {ZOOM}x and count the red pixels (9 per dot).",
                    read_output=_read_count,
                    explain=lambda out, answer: [f"{out.strip()}: there are {answer} red dots."])
    steps = [f"Inside the grey frame at the {where(frame, SIZE)} there are {count} tiny red dots."]
    return Task("small_detail", "How many tiny red dots are inside the small grey frame?", str(count), "count",
                Solution(steps, f"\\boxed{{{count}}}"), images=[image], tool=tool,
                meta={"question": "dots", "frame": list(frame)})


def small_detail_task(rng: random.Random) -> Task:
    return colour_task(rng) if rng.random() < 0.5 else dots_task(rng)
