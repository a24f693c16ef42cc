"""Consistency judge (Keye's "consistency reward"): a generative model is asked whether a response's
reasoning supports its final answer, and its reply is parsed into a score in [0, 1].

The judge is any text generator `generate(prompts) -> texts`: the rollout engine serving a causal LM in
training, or `hf_generate(model, tokenizer)` for any Hugging Face causal LM. Replies are parsed robustly
("Score: 7", "7/10", "\\boxed{7}", "8 out of 10", a lone number, yes/no); a reply that cannot be read raises,
so the sample is recorded as failed rather than silently scored 0. Responses without reasoning are not
applicable (None). This module knows nothing about how generation is served or batched across machines.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from keye_protocol.chat import render_chat
from rewards.registry import reward
from rewards.sample import Sample

TEMPLATE = (
    "Check whether the reasoning supports the final answer.\n\nQuestion:\n{question}\n\nReasoning:\n{reasoning}"
    "\n\nFinal answer:\n{answer}\n\nDoes the reasoning support the final answer? Reply with \"Score: N\", "
    "N from 0 (contradicts it) to {scale} (fully supports it)."
)
_NUM = r"(-?\d+(?:\.\d+)?)"
_LABELLED = re.compile(rf"(?:score|rating|grade)\s*(?:is|[:=])?\s*\**\s*{_NUM}(?:\s*(?:/|out of)\s*{_NUM})?",
                       re.IGNORECASE)
_BOXED = re.compile(rf"\\boxed\{{\s*{_NUM}\s*\}}")
_FRACTION = re.compile(rf"{_NUM}\s*(?:/|out of)\s*{_NUM}")
_NO = re.compile(r"\b(?:no|inconsistent|does not support|doesn't support|contradicts?|unsupported)\b", re.I)
_YES = re.compile(r"\b(?:yes|consistent|supports?|supported)\b", re.IGNORECASE)


def parse_judge_score(reply: str, scale: float = 10) -> float | None:
    """A judge reply as a score in [0, 1], or None when it states none (or one outside 0..scale).

    >>> parse_judge_score("The steps are sound. Score: 8"), parse_judge_score("**Rating**: 3/5")
    (0.8, 0.6)
    >>> parse_judge_score("\\\\boxed{10}"), parse_judge_score("No, it contradicts the answer."), parse_judge_score("hmm")
    (1.0, 0.0, None)
    """
    value, denominator = _read_number(reply)
    if value is not None:
        score = value / (denominator or scale)
        return score if 0.0 <= score <= 1.0 else None
    if _NO.search(reply):
        return 0.0
    if _YES.search(reply):
        return 1.0
    return None


def _read_number(reply: str) -> tuple[float | None, float | None]:
    reply = reply.replace("*", "")
    for pattern in (_LABELLED, _BOXED, _FRACTION):
        match = pattern.search(reply)
        if match:
            groups = [g for g in match.groups() if g is not None]
            return float(groups[0]), (float(groups[1]) if len(groups) > 1 and float(groups[1]) > 0 else None)
    numbers = re.findall(_NUM, reply)
    return (float(numbers[0]), None) if len(numbers) == 1 else (None, None)


def hf_generate(model: Any, tokenizer: Any, max_new_tokens: int = 32) -> Callable[[list[str]], list[str]]:
    """A greedy `generate(prompts) -> texts` over any Hugging Face causal LM (object or path)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model, str):
        tokenizer = tokenizer or model
        model = AutoModelForCausalLM.from_pretrained(model)
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    model.eval()
    tokenizer.padding_side = "left"  # generation continues every row from its own last token

    def generate(prompts: list[str]) -> list[str]:
        messages = [[{"role": "user", "content": p}] for p in prompts]
        if getattr(tokenizer, "chat_template", None):
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        else:
            texts = [render_chat(m, mode="no_think") for m in messages]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


@reward("consistency_judge", factory=True, batched=True)
class ConsistencyJudge:
    """`ConsistencyJudge(generate=...)(samples) -> list[float | None]`; or give `model` (+ `tokenizer`).

    >>> judge = ConsistencyJudge(generate=lambda prompts: ["Score: 9"] * len(prompts))
    >>> judge([Sample(prompt="2+2? /think", completion="<think>2+2=4</think><answer>4</answer>"),
    ...        Sample(prompt="2+2? /no_think", completion="4")])
    [0.9, None]
    """

    __reward_batched__ = True

    def __init__(self, generate: Callable[[list[str]], list[str]] | None = None, model: Any = None,
                 tokenizer: Any = None, max_new_tokens: int = 32, template: str = TEMPLATE, scale: float = 10):
        if generate is None:
            if model is None:
                raise ValueError("consistency_judge needs `generate` (a prompts -> texts callable) or `model`")
            generate = hf_generate(model, tokenizer, max_new_tokens)
        self.generate, self.template, self.scale = generate, template, scale

    def prompt(self, sample: Sample) -> str:
        return self.template.format(question=sample.prompt_text, reasoning=sample.think.strip(),
                                    answer=sample.parsed.final_answer, scale=int(self.scale))

    def __call__(self, samples: list[Sample]) -> list[float | None]:
        todo = [i for i, s in enumerate(samples) if s.parsed.reasoned]
        replies = self.generate([self.prompt(samples[i]) for i in todo]) if todo else []
        scores: list[float | None] = [None] * len(samples)
        for i, reply in zip(todo, replies, strict=True):
            scores[i] = parse_judge_score(reply, self.scale)
            if scores[i] is None:
                raise ValueError(f"consistency judge reply has no score in 0..{self.scale:g}: {reply[:200]!r}")
        return scores
