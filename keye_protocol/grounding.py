"""Keye's grounding text format: integer coordinates normalised to [0, 1000).

Boxes are written `<|box_start|>[[x1,y1,x2,y2]]<|box_end|>` (several: `[[..],[..]]`), points
`<|point_start|>[[x,y]]<|point_end|>`, names `<|object_ref_start|>name<|object_ref_end|>`. Parsing reads the
bracketed numbers wherever they appear, so it also accepts output whose special tokens were stripped.
"""

from __future__ import annotations

import re

SCALE = 1000
_BOX_RE = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")
_POINT_RE = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\](?!\s*,\s*\d)")


def _norm(value: float, size: float) -> int:
    return min(SCALE - 1, max(0, int(value / size * SCALE)))


def normalize_box(box: tuple[float, float, float, float], width: float, height: float) -> list[int]:
    """Pixel box (x1, y1, x2, y2) -> Keye's integer [0, 1000) coordinates.

    >>> normalize_box((50, 25, 100, 100), width=200, height=100)
    [250, 250, 500, 999]
    """
    x1, y1, x2, y2 = box
    return [_norm(x1, width), _norm(y1, height), _norm(x2, width), _norm(y2, height)]


def denormalize_box(box: list[float], width: float, height: float) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1 * width / SCALE, y1 * height / SCALE, x2 * width / SCALE, y2 * height / SCALE]


def normalize_point(point: tuple[float, float], width: float, height: float) -> list[int]:
    return [_norm(point[0], width), _norm(point[1], height)]


def format_boxes(boxes: list[list[int]]) -> str:
    inner = ",".join(f"[{','.join(str(int(v)) for v in b)}]" for b in boxes)
    return f"<|box_start|>[{inner}]<|box_end|>"


def format_points(points: list[list[int]]) -> str:
    inner = ",".join(f"[{int(p[0])},{int(p[1])}]" for p in points)
    return f"<|point_start|>[{inner}]<|point_end|>"


def format_object_ref(name: str) -> str:
    return f"<|object_ref_start|>{name}<|object_ref_end|>"


def parse_boxes(text: str) -> list[list[float]]:
    """Every `[x1,y1,x2,y2]` in `text`, in order.

    >>> parse_boxes("<|box_start|>[[10,20,30,40],[5, 5, 9, 9]]<|box_end|>")
    [[10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]]
    """
    return [[float(v) for v in m] for m in _BOX_RE.findall(text)]


def parse_points(text: str) -> list[list[float]]:
    """Every `[x,y]` in `text` that is not part of a box.

    >>> parse_points("<|point_start|>[[120,340]]<|point_end|>")
    [[120.0, 340.0]]
    """
    without_boxes = _BOX_RE.sub("", text)
    return [[float(v) for v in m] for m in _POINT_RE.findall(without_boxes)]
