"""Format reward: does a response follow the format of the mode it was asked for?

Per mode (KEYE.md; tags and parsing from `keye_protocol.chat`, so format rewards, cold-start data and evaluation
agree):
- think:      exactly ``<think>reasoning</think><answer>answer</answer>``, both non-empty, nothing around them;
- no_think:   no reasoning: no ``<analysis>``, no non-empty ``<think>`` (an empty ``<think>\\n\\n</think>``
  prefix is allowed), a non-empty answer (an ``<answer>`` wrapper is tolerated);
- auto_think: opens with a non-empty ``<analysis>``, then either ``<answer>..</answer>`` or a full think
  response, and does what the analysis decided when the analysis says it (see `analysis_decision`);
- agentic:    think format, and every code block closed and run (followed by ``<sandbox_output>``).
This module knows nothing about correctness: a well-formed wrong answer scores 1.
"""

from __future__ import annotations

import re

from keye_protocol.chat import (
    ANALYSIS_CLOSE,
    ANALYSIS_OPEN,
    ANSWER_CLOSE,
    ANSWER_OPEN,
    SANDBOX_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    Mode,
    parse_mode,
    parse_response,
)
from rewards.registry import reward
from rewards.sample import Sample

_T = {tag: re.escape(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, ANALYSIS_OPEN,
                                      ANALYSIS_CLOSE)}
_THINK_RE = re.compile(rf"\s*{_T[THINK_OPEN]}(.*?){_T[THINK_CLOSE]}\s*{_T[ANSWER_OPEN]}(.*?){_T[ANSWER_CLOSE]}\s*",
                       re.DOTALL)
_ANSWER_RE = re.compile(rf"\s*{_T[ANSWER_OPEN]}(.*?){_T[ANSWER_CLOSE]}\s*", re.DOTALL)
_ANALYSIS_RE = re.compile(rf"\s*{_T[ANALYSIS_OPEN]}(.*?){_T[ANALYSIS_CLOSE]}(.*)", re.DOTALL)
_EMPTY_THINK_RE = re.compile(rf"^\s*{_T[THINK_OPEN]}\s*{_T[THINK_CLOSE]}", re.DOTALL)
_CODE_RE = re.compile(r"```python\n(.*?)```", re.DOTALL)

# How an analysis states its decision (checked in this order; the first that matches decides).
_DIRECT = re.compile(r"no need to (?:think|reason)|(?:does not|doesn't|do not|don't) (?:need|require)|"
                     r"not (?:complex|difficult|hard)|answer(?:ed)? directly|directly answer", re.IGNORECASE)
_REASON = re.compile(r"\b(?:needs?|requires?)\b.*\b(?:reasoning|thinking|think|steps?)\b|complex|difficult|"
                     r"multi-step|step[- ]by[- ]step|careful", re.IGNORECASE)
_SIMPLE = re.compile(r"\b(?:simple|easy|straightforward|trivial|obvious)\b", re.IGNORECASE)


def analysis_decision(analysis: str) -> bool | None:
    """What an auto_think analysis decided: True (reason), False (answer directly), None (it does not say).

    >>> analysis_decision("This is simple arithmetic; no need to think."), analysis_decision("Complex: needs reasoning.")
    (False, True)
    """
    if _DIRECT.search(analysis):
        return False
    if _REASON.search(analysis):
        return True
    if _SIMPLE.search(analysis):
        return False
    return None


def _count(text: str, *tags: str) -> int:
    return sum(text.count(tag) for tag in tags)


def _think_problems(text: str) -> list[str]:
    match = _THINK_RE.fullmatch(text)
    if match is None:
        return ["not of the form <think>..</think><answer>..</answer>"]
    problems = []
    if _count(text, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, ANALYSIS_OPEN, ANALYSIS_CLOSE) != 4:
        problems.append("extra or nested tags")
    if not match.group(1).strip():
        problems.append("empty <think>")
    if not match.group(2).strip():
        problems.append("empty <answer>")
    return problems


def _no_think_problems(text: str) -> list[str]:
    rest = _EMPTY_THINK_RE.sub("", text, count=1)
    problems = []
    if _count(rest, ANALYSIS_OPEN, ANALYSIS_CLOSE):
        problems.append("no_think must not analyse (<analysis> present)")
    if _count(rest, THINK_OPEN, THINK_CLOSE):
        problems.append("no_think must not reason (non-empty <think>)")
    if _count(rest, ANSWER_OPEN, ANSWER_CLOSE) and not _ANSWER_RE.fullmatch(rest):
        problems.append("malformed <answer>")
    if not rest.replace(ANSWER_OPEN, "").replace(ANSWER_CLOSE, "").strip():
        problems.append("empty answer")
    return problems


def _auto_think_problems(text: str) -> list[str]:
    match = _ANALYSIS_RE.match(text)
    if match is None:
        return ["auto_think must open with <analysis>..</analysis>"]
    analysis, body = match.groups()
    problems = [] if analysis.strip() else ["empty <analysis>"]
    if _count(body, ANALYSIS_OPEN, ANALYSIS_CLOSE):
        problems.append("more than one <analysis>")
    reasons = THINK_OPEN in body
    if reasons:
        problems += _think_problems(body)
    elif _ANSWER_RE.fullmatch(body) is None or not _ANSWER_RE.fullmatch(body).group(1).strip():
        problems.append("after the analysis: expected <answer>..</answer> or a full think response")
    decided = analysis_decision(analysis)
    if decided is not None and decided != reasons:
        problems.append("the analysis decided to " + ("reason" if decided else "answer directly")
                        + " but the response " + ("does not" if decided else "reasons"))
    return problems


def _agentic_problems(text: str) -> list[str]:
    problems = _think_problems(text)
    parsed = parse_response(text)
    if parsed.open_code_block:
        problems.append("unclosed ```python block")
    for match in _CODE_RE.finditer(parsed.think or ""):
        if not match.group(1).strip():
            problems.append("empty code block")
        if not (parsed.think or "")[match.end():].lstrip().startswith(SANDBOX_OPEN):
            problems.append("code block without a <sandbox_output> (it was not run)")
    return problems


_CHECKS = {Mode.THINK: _think_problems, Mode.NO_THINK: _no_think_problems,
           Mode.AUTO_THINK: _auto_think_problems, Mode.AGENTIC: _agentic_problems}


def format_problems(text: str, mode: str | Mode) -> list[str]:
    """What is wrong with the format of `text` for `mode` (empty: well-formed).

    >>> format_problems("<think>1+1=2</think><answer>\\\\boxed{2}</answer>", "think")
    []
    >>> format_problems("<think>1+1=2</think>2", "think")
    ['not of the form <think>..</think><answer>..</answer>']
    """
    return _CHECKS[parse_mode(mode)](text)


@reward("format")
def format_reward(sample: Sample) -> float:
    """1.0 if the completion is well-formed for the sample's mode, else 0.0.

    >>> format_reward(Sample(prompt="2+2? /no_think", completion="4"))
    1.0
    """
    return 0.0 if format_problems(sample.completion, sample.mode) else 1.0
