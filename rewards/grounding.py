"""Grounding rewards: box IoU and point-in-box, in Keye's ``[[x1,y1,x2,y2]]`` 0-1000 format.

Several objects are matched one-to-one so that the total score is as large as possible (an optimal
assignment: scipy's `linear_sum_assignment` when scipy is installed, else the Hungarian algorithm below).
Missing and extra predictions both count as zero-score matches: the score is the matched sum divided by
max(#predicted, #gold), so a model cannot gain by spraying boxes. Boxes are read with
`keye_protocol.grounding`, from the answer part of the response (whole text for no_think).
This module knows nothing about images: coordinates are already normalised.
"""

from __future__ import annotations

from keye_protocol.grounding import parse_boxes, parse_points
from rewards.registry import reward
from rewards.sample import Sample

try:
    from scipy.optimize import linear_sum_assignment as _scipy_assignment
except ImportError:  # scipy is optional; the pure-Python solver below is exact too
    _scipy_assignment = None


def box_iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes; 0 for degenerate boxes.

    >>> box_iou([0, 0, 10, 10], [5, 5, 15, 15])  # 25 / (100 + 100 - 25)
    0.14285714285714285
    """
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def point_in_box(point: list[float], box: list[float]) -> bool:
    """Whether (x, y) lies in the box, edges included."""
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _hungarian(cost: list[list[float]]) -> list[tuple[int, int]]:
    """Minimum-cost assignment for an n x m cost matrix with n <= m (e-maxx's O(n^2 m) potentials method)."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    u, v, p, way = [0.0] * (n + 1), [0.0] * (m + 1), [0] * (m + 1), [0] * (m + 1)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return [(p[j] - 1, j - 1) for j in range(1, m + 1) if p[j]]


def best_matching_score(scores: list[list[float]]) -> float:
    """Largest sum of scores[i][j] over one-to-one pairs (i, j).

    >>> best_matching_score([[0.9, 0.8], [0.85, 0.1]])  # 0.8 + 0.85 beats greedy 0.9 + 0.1
    1.65
    """
    if not scores or not scores[0]:
        return 0.0
    transpose = len(scores) > len(scores[0])
    matrix = [list(col) for col in zip(*scores)] if transpose else scores
    if _scipy_assignment is not None:
        rows, cols = _scipy_assignment(matrix, maximize=True)
        pairs = zip(rows.tolist(), cols.tolist())
    else:
        pairs = _hungarian([[-s for s in row] for row in matrix])
    return sum(matrix[i][j] for i, j in pairs)


def matched_iou(predicted: list[list[float]], gold: list[list[float]]) -> float:
    """Mean IoU over an optimal one-to-one matching; unmatched boxes on either side count 0.

    >>> matched_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [20, 20, 30, 30]])
    0.5
    """
    if not predicted or not gold:
        return 0.0
    scores = [[box_iou(p, g) for g in gold] for p in predicted]
    return best_matching_score(scores) / max(len(predicted), len(gold))


def matched_points(points: list[list[float]], gold: list[list[float]]) -> float:
    """Fraction of gold boxes hit by distinct points, divided by max(#points, #boxes).

    >>> matched_points([[5, 5], [50, 50]], [[0, 0, 10, 10], [40, 40, 60, 60]])
    1.0
    """
    if not points or not gold:
        return 0.0
    scores = [[float(point_in_box(p, g)) for g in gold] for p in points]
    return best_matching_score(scores) / max(len(points), len(gold))


def _gold_boxes(sample: Sample) -> list[list[float]]:
    truth = sample.ground_truth
    if isinstance(truth, (list, tuple)) and len(truth) == 4 and all(isinstance(v, (int, float)) for v in truth):
        truth = [truth]  # one box written flat
    boxes = parse_boxes(truth) if isinstance(truth, str) else parse_boxes(str(truth or ""))
    if not boxes:
        raise ValueError(f"grounding rewards need gold boxes [[x1,y1,x2,y2], ...] (0-1000) as the ground truth; "
                         f"got {truth!r}")
    return boxes


def _answer(sample: Sample) -> str:
    return sample.parsed.answer or ""


@reward("iou")
def iou_reward(sample: Sample) -> float:
    """Mean matched IoU of the boxes in the answer against the gold boxes.

    >>> iou_reward(Sample(prompt="find the cat /no_think", completion="[[0,0,10,10]]",
    ...                   ground_truth=[[5, 5, 15, 15]]))
    0.14285714285714285
    """
    return matched_iou(parse_boxes(_answer(sample)), _gold_boxes(sample))


@reward("point_in_box")
def point_reward(sample: Sample) -> float:
    """Matched fraction of gold boxes hit by the points in the answer.

    >>> point_reward(Sample(prompt="point at it /no_think", completion="[[120,340]]",
    ...                     ground_truth=[[100, 300, 200, 400]]))
    1.0
    """
    return matched_points(parse_points(_answer(sample)), _gold_boxes(sample))
