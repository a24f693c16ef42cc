"""SFT rows of 2-digit addition with an imperfect teacher, and held-out prompts: the data of the tiny RL recipe.

At tiny scale, RL only adds accuracy when the cold start holds errors the verifier can select against
(DESIGN.md). So the solver teacher here drops the carry on `carry_drop_rate` of the carry problems (drawn
per row), in every mode, and writes ``\\boxed{}`` answers in the mode formats of `keye_protocol.chat`. The
evaluation prompts are pairs never used for training. The "compact" style keeps a think response within
a 48-token budget of a character-level tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from cold_start_data.formatting import format_solution
from cold_start_data.sources.arithmetic import addition_task, has_carry
from cold_start_data.sources.word_problems import addition_story
from cold_start_data.writer import write_jsonl
from keye_protocol.chat import Mode, parse_mode, with_mode


@dataclass
class ArithmeticSplit:
    train: list[dict]  # {"messages": [user, assistant], "prompt", "answer", "mode", "flawed", "carry"}
    eval: list[dict]  # {"prompt", "answer", "mode", "carry"}: one row per held-out pair and mode


def all_pairs(lo: int = 10, hi: int = 99) -> list[tuple[int, int]]:
    return [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]


def arithmetic_sft_rows(n: int, seed: int = 0, carry_drop_rate: float = 0.6,
                        modes: tuple[str, ...] = ("think", "no_think"), n_eval: int = 500,
                        style: str = "compact", prompt_style: str = "bare",
                        operands: tuple[int, int] = (10, 99)) -> ArithmeticSplit:
    """`n` training rows (modes in turn, so each mode gets n/len(modes) within one) and `n_eval` held-out pairs
    per mode. Training pairs cycle through a seeded shuffle of the pairs not held out (both operands within
    `operands`: 8100 pairs by default).
    `prompt_style` "word" asks each sum as a one-sentence story (`addition_story`) instead of "What is a + b?"."""
    modes = tuple(parse_mode(m) for m in modes)
    if Mode.AGENTIC in modes:
        raise ValueError("arithmetic rows have no image to work on: use think, no_think or auto_think")
    if not 0.0 <= carry_drop_rate <= 1.0:
        raise ValueError(f"carry_drop_rate must be in [0, 1], got {carry_drop_rate}")
    pairs = all_pairs(*operands)
    rng = random.Random(f"{seed}:arithmetic-sft")
    rng.shuffle(pairs)
    if not 0 <= n_eval < len(pairs):
        raise ValueError(f"n_eval must be in [0, {len(pairs)}), got {n_eval}")
    held, pool = pairs[:n_eval], pairs[n_eval:]
    train = []
    for i in range(n):
        if i and i % len(pool) == 0:
            rng.shuffle(pool)  # a new epoch over the training pairs
        a, b = pool[i % len(pool)]
        train.append(_train_row(a, b, modes[i % len(modes)], rng, carry_drop_rate, style, prompt_style))
    evaluation = [{"prompt": _prompt(a, b, prompt_style), "answer": str(a + b), "mode": mode.value,
                   "carry": has_carry(a, b)} for mode in modes for a, b in held]
    return ArithmeticSplit(train, evaluation)


def _prompt(a: int, b: int, prompt_style: str) -> str:
    if prompt_style not in ("bare", "word"):
        raise ValueError(f"prompt_style must be 'bare' or 'word', got {prompt_style!r}")
    return addition_story(a, b) if prompt_style == "word" else f"What is {a} + {b}?"


def _train_row(a: int, b: int, mode: Mode, rng: random.Random, rate: float, style: str, prompt_style: str) -> dict:
    task = addition_task(a, b, style=style)
    task.prompt = _prompt(a, b, prompt_style)
    flawed = task.flawed_solution is not None and rng.random() < rate
    solution = task.flawed_solution if flawed else task.solution
    carry = task.flawed_solution is not None
    reason = "there is a carry to track" if carry else "no column carries"
    response = format_solution(mode, solution, complex_=carry, reason=reason)
    user = with_mode([{"role": "user", "content": task.prompt}], mode)[0]
    user = {"role": "user", "content": user["content"][0]["text"]}  # plain text: these rows have no images
    return {"messages": [user, {"role": "assistant", "content": response}], "prompt": task.prompt,
            "answer": task.answer, "mode": mode.value, "flawed": flawed, "carry": carry}


def write_arithmetic(out: str | Path, n: int, **kwargs) -> ArithmeticSplit:
    """Write ``train.jsonl`` and ``eval.jsonl`` under `out`."""
    split = arithmetic_sft_rows(n, **kwargs)
    write_jsonl(split.train, Path(out) / "train.jsonl")
    write_jsonl(split.eval, Path(out) / "eval.jsonl")
    return split
