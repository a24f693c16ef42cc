"""Images of coloured shapes drawn with PIL: counting ("how many red circles?") and grounding (boxes).

Shapes never overlap, so the solver's knowledge of what it drew is the ground truth: exact counts, exact
boxes in Keye's 0-1000 coordinates (`keye_protocol.grounding`). The solver's reasoning names each object it finds
with its position, in reading order. Image sides are multiples of 28 (the processor's patch x merge).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from cold_start_data.tasks import Solution, Task
from keye_protocol.grounding import format_boxes, normalize_box

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220), "yellow": (235, 200, 20),
           "black": (20, 20, 20)}
KINDS = ["circle", "square", "triangle"]
SIZE = 224


@dataclass
class Shape:
    kind: str
    colour: str
    box: tuple[int, int, int, int]  # pixels x1, y1, x2, y2

    def name(self) -> str:
        return f"{self.colour} {self.kind}"


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    x1, y1, x2, y2 = shape.box
    fill = COLOURS[shape.colour]
    if shape.kind == "circle":
        draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
    else:
        draw.polygon([((x1 + x2) // 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)


def place(rng: random.Random, specs: list[tuple[str, str]], size: int = SIZE, lo: int = 18, hi: int = 40,
          gap: int = 4) -> list[Shape]:
    """Non-overlapping shapes for (kind, colour) specs; a failed layout restarts (deterministic via rng)."""
    for _ in range(100):
        shapes: list[Shape] = []
        for kind, colour in specs:
            for _ in range(200):
                side = rng.randint(lo, hi)
                x, y = rng.randint(0, size - side), rng.randint(0, size - side)
                box = (x, y, x + side, y + side)
                if all(_apart(box, s.box, gap) for s in shapes):
                    shapes.append(Shape(kind, colour, box))
                    break
            else:
                break
        if len(shapes) == len(specs):
            return shapes
    raise RuntimeError(f"could not place {len(specs)} shapes on a {size}px canvas")


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def render(shapes: list[Shape], size: int = SIZE, background: tuple[int, int, int] = (245, 245, 240)) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw_shape(draw, shape)
    return image


def reading_order(shapes: list[Shape]) -> list[Shape]:
    """Top to bottom in bands of 56 px, then left to right: the order a person scans."""
    return sorted(shapes, key=lambda s: (s.box[1] // 56, s.box[0]))


def where(box: tuple[int, ...], size: int = SIZE) -> str:
    cx, cy = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def _distractors(rng: random.Random, target: tuple[str, str], n: int) -> list[tuple[str, str]]:
    others = [(k, c) for k in KINDS for c in COLOURS if (k, c) != target]
    return [rng.choice(others) for _ in range(n)]


def counting_task(rng: random.Random) -> Task:
    target = (rng.choice(KINDS), rng.choice(list(COLOURS)))
    count = rng.randint(1, 7)
    specs = [target] * count + _distractors(rng, target, rng.randint(0, 5))
    rng.shuffle(specs)
    shapes = place(rng, specs)
    name = f"{target[1]} {target[0]}"
    found = [s for s in reading_order(shapes) if (s.kind, s.colour) == target]
    steps = [f"I scan the image for {name}s, top to bottom."]
    steps += [f"{i}. a {name} at the {where(s.box)}." for i, s in enumerate(found, start=1)]
    steps.append(f"Other shapes are not {name}s. That makes {count}.")
    return Task("counting", f"How many {name}s are in the image?", str(count), "count",
                Solution(steps, f"\\boxed{{{count}}}"), images=[render(shapes)],
                meta={"target": name, "shapes": len(shapes)})


def grounding_task(rng: random.Random) -> Task:
    target = (rng.choice(KINDS), rng.choice(list(COLOURS)))
    count = rng.choice([1, 1, 1, 2])
    specs = [target] * count + _distractors(rng, target, rng.randint(1, 5))
    rng.shuffle(specs)
    shapes = place(rng, specs)
    name = f"{target[1]} {target[0]}"
    found = [s for s in reading_order(shapes) if (s.kind, s.colour) == target]
    boxes = [normalize_box(s.box, SIZE, SIZE) for s in found]
    steps = []
    for s, b in zip(found, boxes):
        steps.append(f"A {name} is at the {where(s.box)}: from x={b[0]} to x={b[2]} and from y={b[1]} to "
                     f"y={b[3]} on the 0-1000 scale.")
    steps.append(f"{'That is the only one' if count == 1 else f'There are {count} of them'}.")
    prompt = (f"Find the {name} in the image and give its bounding box." if count == 1 else
              f"Find every {name} in the image and give their bounding boxes.")
    answer = format_boxes(boxes)
    return Task("grounding", prompt, answer, "boxes", Solution(steps, answer), images=[render(shapes)],
                meta={"target": name, "objects": count})
