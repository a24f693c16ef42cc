"""The teacher-gap heat strip of a distill sample: each completion token with its gap, log p_student - log p_teacher
(`teacher_gaps` and `token_texts` of a trace record, see posttrain/stages/distill.py), and a shade from -4 to 4.

Near 0 the two agree; a positive gap is a token the student is far more sure of than its teacher, the place the
distillation loss pushes down; a negative one a token the teacher would have picked more readily. The shade is
decided here once, so the terminal and the page colour a token alike. Knows nothing about how shades are drawn.
"""

from __future__ import annotations

THRESHOLDS = (0.1, 0.5, 1.0, 2.0)  # |gap| in nats at which the shade deepens by one
PIECE_CHARS = 40  # what a piece adds to a JSON reply besides its text ({"text": "", "gap": -0.123, "shade": -1}, )


def shade(gap: float) -> int:
    """-4..4: 0 within 0.1 nats of agreement, then one level deeper past each of `THRESHOLDS`, signed like the gap.

    >>> [shade(g) for g in (0.05, -0.3, 0.7, 1.0, 5.0, float("-inf"), float("nan"))]
    [0, -1, 2, 3, 4, -4, 0]
    """
    level = sum(abs(gap) >= t for t in THRESHOLDS)
    return level if gap > 0 else -level


def strip(texts: list[str], gaps: list[float], limit: int) -> list[dict]:
    """`{"text", "gap", "shade"}` per token; past `limit` characters (a piece's text and `PIECE_CHARS`, so a reply
    stays as small as `records.text_limit` means it to), the first and last tokens around a marker piece (gap and
    shade None) saying how many were cut, as `records.clip` cuts a text field.

    >>> [p["text"] for p in strip(["a", "b", "c", "d", "e"], [0.0] * 5, 90)]  # each piece counts 41 characters
    ['a', ' … [3 of 5 tokens cut] … ', 'e']
    """
    pieces = [{"text": text, "gap": gap, "shade": shade(gap)} for text, gap in zip(texts, gaps)]
    if sum(len(text) + PIECE_CHARS for text in texts) <= limit:
        return pieces
    head = _within(pieces, (limit + 1) // 2)
    tail = _within(pieces[len(head):][::-1], limit // 2)[::-1]
    cut = len(pieces) - len(head) - len(tail)
    return [*head, {"text": f" … [{cut:,} of {len(pieces):,} tokens cut] … ", "gap": None, "shade": None}, *tail]


def _within(pieces: list[dict], chars: int) -> list[dict]:
    """The leading pieces that add up to at most `chars` characters."""
    taken, total = [], 0
    for piece in pieces:
        total += len(piece["text"]) + PIECE_CHARS
        if total > chars:
            break
        taken.append(piece)
    return taken
