"""Math answer reward: math-verify (sympy underneath) against the ground truth.

Which text is the answer follows the mode protocol of `keye_protocol.chat` (KEYE.md's evaluation rule):
1. the last ``\\boxed{}`` inside the last ``<answer>``;
2. fallback: the whole ``<answer>`` text, from which math-verify extracts the last expression it can read
   (so ``<answer>The answer is 1/2.</answer>`` counts);
3. no ``<answer>`` tag (a no_think response): the text after any reasoning, read the same way.
A response still inside ``<think>`` has no answer and scores 0. Reasoning is never searched for answers.

math-verify's own timeouts use ``signal.alarm``, which fails outside the main thread and cannot interrupt a long
C call (sympy raising a power tower), so they are switched off here; the worker enforces the deadline by
killing the reward's process (`rewards.reward_process`).
When the gold answer is not mathematics (``Paris``), both sides are compared as normalised text.
This module knows nothing about workers or the pool.
"""

from __future__ import annotations

import logging
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from keye_protocol.chat import ParsedResponse, parse_response
from rewards.registry import reward
from rewards.sample import Sample


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns once that its timeout is off; here that is deliberate (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())

_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())


def answer_text(parsed: ParsedResponse) -> str | None:
    """The text to verify, by the protocol above (None: the response has no answer yet).

    >>> answer_text(parse_response("<think>2+2</think><answer>so \\\\boxed{4}</answer>"))
    '\\\\boxed{4}'
    >>> answer_text(parse_response("<think>x</think><answer>It is 1/2.</answer>"))
    'It is 1/2.'
    """
    if parsed.boxed is not None:
        return f"\\boxed{{{parsed.boxed}}}"
    if parsed.answer is None:
        return None
    return parsed.answer.strip()


def parse_gold(gold) -> list:
    """math-verify's reading of a ground-truth answer given as LaTeX or plain text (``1/2``, ``\\frac12``)."""
    text = str(gold).strip()
    if "\\boxed" in text or text.startswith("$"):
        return parse(text, list(_CONFIG), parsing_timeout=None)
    return parse(f"${text}$", list(_CONFIG), parsing_timeout=None)


def _plain(text: str) -> str:
    text = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", text)
    return re.sub(r"[\s$.]+", " ", text).strip().casefold()


def answers_match(prediction: str, gold) -> bool:
    """Whether a predicted answer (text holding it) equals the gold answer.

    >>> answers_match("\\\\boxed{\\\\frac{1}{2}}", "0.5")
    True
    >>> answers_match("\\\\boxed{50\\\\%}", "1/2")
    True
    >>> answers_match("\\\\boxed{3}", "4")
    False
    """
    predicted = parse(prediction, list(_CONFIG), parsing_timeout=None)
    if predicted and verify(parse_gold(gold), predicted, timeout_seconds=None):
        return True
    inner = re.sub(r"^\\boxed\{(.*)\}$", r"\1", prediction.strip(), flags=re.DOTALL)
    return bool(_plain(str(gold))) and _plain(inner) == _plain(str(gold))


@reward("math")
def math_reward(sample: Sample) -> float:
    """1.0 when the sample's answer equals its ground truth, else 0.0.

    >>> math_reward(Sample(prompt="1/4 + 1/4? /think", ground_truth="1/2",
    ...                    completion="<think>two quarters</think><answer>\\\\boxed{0.5}</answer>"))
    1.0
    """
    if sample.ground_truth is None:
        raise ValueError("the math reward needs a ground truth; give the row a 'ground_truth' (or 'solution', "
                         "'answer') column")
    text = answer_text(sample.parsed)
    if not text:
        return 0.0
    return float(answers_match(text, sample.ground_truth))
