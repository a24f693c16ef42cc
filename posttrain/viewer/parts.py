"""Split a completion into labelled, ordered segments for highlighting: analysis, think, answer, the checked
``\\boxed{}``, code blocks, sandbox output, the tags themselves and special tokens.

`parse_response` (keye_protocol.chat) stays the authority on what the parts *are*; this module only finds where they
sit in the text so a view can colour them. Concatenating the segments' text gives back the completion exactly.
Knows nothing about how segments are drawn (terminal styles, HTML classes).
"""

from __future__ import annotations

import re

from keye_protocol.chat import (ANALYSIS_CLOSE, ANALYSIS_OPEN, ANSWER_CLOSE, ANSWER_OPEN, SANDBOX_CLOSE, SANDBOX_OPEN,
                          THINK_CLOSE, THINK_OPEN, parse_response)

KINDS = ("text", "tag", "special", "analysis", "think", "answer", "boxed", "code", "sandbox")

_OPENERS = {ANALYSIS_OPEN: "analysis", THINK_OPEN: "think", ANSWER_OPEN: "answer"}
_CLOSERS = {ANALYSIS_CLOSE: "analysis", THINK_CLOSE: "think", ANSWER_CLOSE: "answer"}
_CODE_OPEN, _FENCE = "```python\n", "```"
_TOKEN_RE = re.compile("|".join(re.escape(t) for t in [*_OPENERS, *_CLOSERS, SANDBOX_OPEN, SANDBOX_CLOSE,
                                                         _CODE_OPEN, _FENCE]) + r"|<\|[a-z_]+\|>")


def segments(text: str | None) -> list[dict]:
    """Ordered `{"kind", "text"}` pieces of a completion.

    >>> [s["kind"] for s in segments("<think>1+1</think><answer>is \\\\boxed{2}</answer>")]
    ['tag', 'think', 'tag', 'tag', 'answer', 'tag', 'boxed', 'tag', 'tag']
    >>> [s["kind"] for s in segments("so 4<|im_end|>")]
    ['answer', 'special']
    """
    if not text:
        return []
    out: list[dict] = []
    region, inner = "text", None  # region: text | analysis | think | answer; inner: None | code | sandbox
    position = 0
    for match in _TOKEN_RE.finditer(text):
        token = match.group()
        if token == _FENCE and inner != "code":
            continue  # a bare ``` outside a python block is plain text
        piece = text[position:match.start()]
        if token == _FENCE and piece.endswith("\n"):  # the code block's closing "\n```" is all tag
            piece, token = piece[:-1], "\n" + token
        _add(out, inner or region, piece)
        position = match.end()
        _add(out, "special" if token.startswith("<|") else "tag", token)
        if token in _OPENERS:
            region, inner = _OPENERS[token], None
        elif token in _CLOSERS:
            region, inner = "text", None
        elif token == SANDBOX_OPEN:
            inner = "sandbox"
        elif token == _CODE_OPEN:
            inner = "code"
        elif token == SANDBOX_CLOSE or token.endswith(_FENCE):
            inner = None
    _add(out, inner or region, text[position:])
    _mark_untagged_answer(out, text)
    return _split_boxed(out)


def _add(out: list[dict], kind: str, piece: str) -> None:
    if piece:
        out.append({"kind": kind, "text": piece})


def _mark_untagged_answer(out: list[dict], text: str) -> None:
    """No `<answer>` tag: parse_response reads the text after the reasoning as the answer (no_think style)."""
    if ANSWER_OPEN in text or parse_response(text).answer is None:
        return
    for segment in reversed(out):
        if segment["kind"] == "tag":
            break
        if segment["kind"] == "text":
            segment["kind"] = "answer"


def _split_boxed(out: list[dict]) -> list[dict]:
    """Mark the last `\\boxed{...}` of the answer, the part a checker compares."""
    for k in range(len(out) - 1, -1, -1):
        piece = out[k]["text"]
        if out[k]["kind"] != "answer" or "\\boxed{" not in piece:
            continue
        start = piece.rfind("\\boxed{")
        end = _closing_brace(piece, start + len("\\boxed{"))
        if end is None:
            return out
        parts = [("answer", piece[:start]), ("tag", "\\boxed{"), ("boxed", piece[start + 7:end]),
                 ("tag", "}"), ("answer", piece[end + 1:])]
        return out[:k] + [{"kind": kind, "text": t} for kind, t in parts if t] + out[k + 1:]
    return out


def _closing_brace(text: str, start: int) -> int | None:
    depth = 1
    for j in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return j
    return None


def summary(text: str | None) -> dict:
    """The parsed parts a reader checks first: the answer, the boxed value, and what is malformed."""
    parsed = parse_response(text or "")
    return {"answer": parsed.answer, "boxed": parsed.boxed, "reasoned": parsed.reasoned,
            "code_blocks": len(parsed.code_blocks), "sandbox_outputs": len(parsed.sandbox_outputs),
            "problems": parsed.problems}
