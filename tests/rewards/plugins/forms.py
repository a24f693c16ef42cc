"""One reward written in each plug-in form, plus signatures that fit none (loader tests)."""

import asyncio

from rewards import reward


@reward("test_native_length")
def native(sample):
    return {"length": float(len(sample.completion)), "has_think": float(sample.think is not None)}


def trl_exact(prompts, completions, solution, **kwargs):
    """TRL passes text completions for text prompts and message lists for conversational ones."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [float(t.strip() == s) if s is not None else None for t, s in zip(texts, solution)]


def trl_text_only(completions, **kwargs):
    return [float(len(c)) for c in completions]


async def trl_async(prompts, completions, **kwargs):
    await asyncio.sleep(0)
    return [0.5 for _ in completions]


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    bonus = extra_info.get("bonus", 0.0) if extra_info else 0.0
    return {"score": float(ground_truth in solution_str) + bonus, "source_is_gsm8k": float(data_source == "gsm8k")}


def two_required(a, b):
    return 1.0


def no_args():
    return 1.0


NOT_CALLABLE = 3
