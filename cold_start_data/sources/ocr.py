"""Rendered text to read and compute with: a short price list drawn with PIL's built-in font.

The question needs both reading (OCR) and arithmetic: the solver first transcribes the lines it drew, then
adds them up column by column (`sources.arithmetic`). Pillow's default font is a bundled FreeType font, so
the same seed draws the same pixels on every machine with the same Pillow.
"""

from __future__ import annotations

import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from cold_start_data.sources.arithmetic import addition_steps
from cold_start_data.tasks import Solution, Task

ITEMS = ["apples", "bread", "milk", "rice", "tea", "eggs", "soap", "pens", "cheese", "juice"]
WIDTH, HEIGHT = 224, 168


@lru_cache(maxsize=4)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_lines(lines: list[str], rng: random.Random | None = None,
                 size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    """Lines of text on a card. With `rng`, the card's tint, header band, margins and font size vary: text
    images of one layout look alike to a perceptual hash, and would be removed as near-duplicates."""
    rng = rng or random.Random(0)
    tint = tuple(rng.randint(215, 255) for _ in range(3))
    image = Image.new("RGB", size, tint)
    draw = ImageDraw.Draw(image)
    band = rng.randint(0, 40)
    if band:
        draw.rectangle((0, 0, size[0], band), fill=tuple(rng.randint(60, 200) for _ in range(3)))
    text_size = rng.randint(18, 26)
    x = rng.randint(6, 60)
    step = max(text_size + 4, (size[1] - band - 12) // max(1, len(lines)))
    for i, line in enumerate(lines):
        draw.text((x, band + 6 + i * step), line, fill=(10, 10, 10), font=font(text_size))
    return image


def price_list_task(rng: random.Random) -> Task:
    n = rng.choice([2, 2, 3])
    names = rng.sample(ITEMS, n)
    prices = [rng.randint(2, 79) for _ in names]
    lines = [f"{name}: {price}" for name, price in zip(names, prices)]
    steps = ["The image reads: " + "; ".join(lines) + "."]
    running = prices[0]
    for price in prices[1:]:
        more, running = addition_steps(running, price)
        steps += more
    total = sum(prices)
    return Task("ocr_math", "What is the total price of the items listed in the image?", str(total), "math",
                Solution(steps, f"\\boxed{{{total}}}"), images=[render_lines(lines, rng)],
                meta={"lines": n})
