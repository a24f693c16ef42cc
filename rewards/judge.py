"""Generative judges, as Keye-VL's RL uses them: a language model reads a response and replies with a verdict.

Two judges, one parser:
- `outcome_judge`: is the response's final answer right against the reference (the sample's ground truth)?
  Asked with `OUTCOME_TEMPLATE` (question, reference answer, the response's final answer), reply "Score: 1" (right)
  or "Score: 0" (wrong); scale 1. Not applicable (None) without a reference; an empty final answer scores 0.0
  without asking (there is nothing to judge).
- `consistency_judge`: does the reasoning support the final answer? Asked with `CONSISTENCY_TEMPLATE` (question,
  the response's reasoning, its final answer), reply "Score: N", N from 0 (contradicts it) to 10 (fully supports
  it); scale 10. Not applicable (None) to a response without reasoning.

The reply is read by `parse_judge_score` from its answer part (a judge that thinks first has its `<think>` block
dropped, `keye_protocol.chat.parse_response`), in this order: a labelled score ("Score: 7", "Rating = 3/5", "grade
is 8 out of 10"), a `\\boxed{7}`, a fraction ("7/10", "8 out of 10"); then a verdict word (no / incorrect / wrong /
contradicts / inconsistent -> 0; yes / correct / right / supports / consistent -> 1, the negative ones first);
then a lone number. A labelled number outside 0..scale is no score. The number is divided by its denominator, or
by the judge's scale. A reply with no score raises, so the sample is recorded as failed (``exception``) rather
than silently scored 0; in a batch, the worker or server then scores each sample alone, so only that one fails.

The judge asks a text generator, `generate(prompts) -> texts` (`Generate`): any callable works (a rollout engine, an
API client, a lambda in a test). This module knows nothing about models, engines or how judges are served or
batched across machines: a recipe that names a judge with a `model` gets one generating through a rollout engine,
built by `posttrain.judge_engine` (rewards never import `rollout`), and `rewards.model_server` serves it.
"""

from __future__ import annotations

import re
from typing import Callable

from keye_protocol.chat import parse_response
from rewards.registry import reward
from rewards.sample import Sample

CONSISTENCY_TEMPLATE = (
    "Check whether the reasoning supports the final answer.\n\nQuestion:\n{question}\n\nReasoning:\n{reasoning}"
    "\n\nFinal answer:\n{answer}\n\nDoes the reasoning support the final answer? Reply with \"Score: N\", "
    "N from 0 (contradicts it) to {scale} (fully supports it)."
)
OUTCOME_TEMPLATE = (
    "Judge whether a response's final answer is correct.\n\nQuestion:\n{question}\n\nReference answer:\n"
    "{reference}\n\nResponse's final answer:\n{answer}\n\nIs the response's final answer equivalent to the "
    "reference answer? Reply with \"Score: {scale}\" if it is and \"Score: 0\" if it is not."
)
_NUM = r"(-?\d+(?:\.\d+)?)"
_LABELLED = re.compile(rf"(?:score|rating|grade)\s*(?:is|[:=])?\s*\**\s*{_NUM}(?:\s*(?:/|out of)\s*{_NUM})?",
                       re.IGNORECASE)
_BOXED = re.compile(rf"\\boxed\{{\s*{_NUM}\s*\}}")
_FRACTION = re.compile(rf"{_NUM}\s*(?:/|out of)\s*{_NUM}")
_NO = re.compile(r"\b(?:no|incorrect|wrong|not (?:correct|right|equivalent)|inconsistent|does not support|"
                 r"doesn't support|contradicts?|unsupported)\b", re.IGNORECASE)
_YES = re.compile(r"\b(?:yes|correct|right|equivalent|consistent|supports?|supported)\b", re.IGNORECASE)


def parse_judge_score(reply: str, scale: float = 10) -> float | None:
    """A judge reply as a score in [0, 1], or None when it states none (or a labelled one outside 0..scale).

    >>> parse_judge_score("The steps are sound. Score: 8"), parse_judge_score("**Rating**: 3/5")
    (0.8, 0.6)
    >>> parse_judge_score("\\\\boxed{10}"), parse_judge_score("No, it contradicts."), parse_judge_score("hmm")
    (1.0, 0.0, None)
    >>> parse_judge_score("<think>42 = 40 + 2</think>The answer 42 is correct.", scale=1)
    1.0
    """
    verdict = parse_response(reply).answer or ""
    value, denominator = _labelled_number(verdict)
    if value is not None:
        score = value / (denominator or scale)
        return score if 0.0 <= score <= 1.0 else None
    if _NO.search(verdict):
        return 0.0
    if _YES.search(verdict):
        return 1.0
    numbers = re.findall(_NUM, verdict)
    if len(numbers) == 1 and 0.0 <= float(numbers[0]) / scale <= 1.0:
        return float(numbers[0]) / scale
    return None


def _labelled_number(reply: str) -> tuple[float | None, float | None]:
    reply = reply.replace("*", "")
    for pattern in (_LABELLED, _BOXED, _FRACTION):
        match = pattern.search(reply)
        if match:
            groups = [g for g in match.groups() if g is not None]
            return float(groups[0]), (float(groups[1]) if len(groups) > 1 and float(groups[1]) > 0 else None)
    return None, None


Generate = Callable[[list[str]], list[str]]  # prompts -> replies, one each, in order


class GenerativeJudge:
    """A judge: asks `generate` about each sample `prompt` applies to, parses the replies (see the module
    docstring). Subclasses give the template, the scale, and which samples apply. A recipe's `model`, `engine`,
    ... options are `posttrain.judge_engine`'s: it builds `generate` from them."""

    __reward_batched__ = True  # instances inherit it: the adapter calls them with a batch
    name = "judge"
    default_template, default_scale = CONSISTENCY_TEMPLATE, 10.0

    def __init__(self, generate: Generate, template: str | None = None, scale: float | None = None):
        if not callable(generate):
            raise TypeError(f"{self.name}: `generate` must be a callable prompts -> texts, got "
                            f"{type(generate).__name__}")
        self.generate = generate
        self.template = template or self.default_template
        self.scale = float(scale if scale is not None else self.default_scale)

    def prompt(self, sample: Sample) -> str | None:
        """The question for this sample, or None when the judge does not apply to it."""
        raise NotImplementedError

    def preset(self, sample: Sample) -> float | None:
        """A score known without asking (None: ask, or not applicable)."""
        return None

    def __call__(self, samples: list[Sample]) -> list[float | None]:
        scores: list[float | None] = [self.preset(s) for s in samples]
        prompts = {i: self.prompt(s) for i, s in enumerate(samples) if scores[i] is None}
        todo = [i for i, p in prompts.items() if p is not None]
        replies = self.generate([prompts[i] for i in todo]) if todo else []
        for i, reply in zip(todo, replies, strict=True):
            scores[i] = parse_judge_score(reply, self.scale)
            if scores[i] is None:
                raise ValueError(f"{self.name} reply has no score in 0..{self.scale:g}: {reply[:200]!r}")
        return scores


@reward("consistency_judge", factory=True, batched=True)
class ConsistencyJudge(GenerativeJudge):
    """Does the reasoning support the final answer? `ConsistencyJudge(generate=...)(samples)`.

    >>> judge = ConsistencyJudge(generate=lambda prompts: ["Score: 9"] * len(prompts))
    >>> judge([Sample(prompt="2+2? /think", completion="<think>2+2=4</think><answer>4</answer>"),
    ...        Sample(prompt="2+2? /no_think", completion="4")])
    [0.9, None]
    """

    name = "consistency_judge"

    def prompt(self, sample: Sample) -> str | None:
        if not sample.parsed.reasoned:
            return None
        return self.template.format(question=sample.prompt_text, reasoning=sample.think.strip(),
                                    answer=sample.parsed.final_answer, scale=f"{self.scale:g}")


@reward("outcome_judge", factory=True, batched=True)
class OutcomeJudge(GenerativeJudge):
    """Is the final answer right against the reference? `OutcomeJudge(generate=...)(samples)`.

    >>> judge = OutcomeJudge(generate=lambda prompts: ["Incorrect. Score: 0"] * len(prompts))
    >>> judge([Sample(prompt="2+2?", completion="\\\\boxed{5}", ground_truth="4"),
    ...        Sample(prompt="2+2?", completion="4"), Sample(prompt="2+2?", completion="<think>hmm", ground_truth="4")])
    [0.0, None, 0.0]
    """

    name = "outcome_judge"
    default_template, default_scale = OUTCOME_TEMPLATE, 1.0

    def preset(self, sample: Sample) -> float | None:
        return 0.0 if sample.ground_truth is not None and not sample.parsed.final_answer else None

    def prompt(self, sample: Sample) -> str | None:
        if sample.ground_truth is None:
            return None
        return self.template.format(question=sample.prompt_text, reference=sample.ground_truth,
                                    answer=sample.parsed.final_answer, scale=f"{self.scale:g}")
