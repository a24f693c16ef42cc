"""Arithmetic with column-method solutions: addition (with carries), subtraction (with borrows), multiplication.

The solver writes one step per column, the way a careful student does, so the step count measures difficulty
(the auto_think judge reads it). Addition also has the systematic flaw the RL recipe needs: the carry is
dropped on every column that should carry, giving a consistent wrong sum that a verifier rejects.
Two styles: "verbose" (the mixture) and "compact" (short enough for a tiny model's 48-token budget).
This module knows nothing about modes or tags.
"""

from __future__ import annotations

import random

from cold_start_data.tasks import Solution, Task

PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands"]


def _digits(n: int) -> list[int]:
    """Least significant first."""
    return [int(d) for d in reversed(str(n))]


def has_carry(a: int, b: int) -> bool:
    """Whether column addition of a + b carries into a further column (a carry out of the leading column is
    just written down, so dropping it changes nothing).

    >>> has_carry(37, 45), has_carry(32, 45), has_carry(92, 73)
    (True, False, False)
    """
    return addition_steps(a, b, drop_carry=True)[1] != a + b


def addition_steps(a: int, b: int, drop_carry: bool = False, style: str = "verbose") -> tuple[list[str], int]:
    """Column addition; returns the steps and the sum they arrive at (wrong when a carry is dropped).

    >>> addition_steps(37, 45, style="compact")
    (['7+5=12, carry 1.', '3+4+1=8.'], 82)
    >>> addition_steps(37, 45, drop_carry=True, style="compact")
    (['7+5=12.', '3+4=7.'], 72)
    """
    da, db = _digits(a), _digits(b)
    width = max(len(da), len(db))
    da, db = da + [0] * (width - len(da)), db + [0] * (width - len(db))
    steps, written, carry = [], [], 0
    for col in range(width):
        x, y = da[col], db[col]
        total = x + y + carry
        plus = f"+{carry}" if carry else ""
        last = col == width - 1
        digit = str(total) if last else str(total % 10)
        next_carry = 0 if last or drop_carry else total // 10
        if style == "compact":
            steps.append(f"{x}+{y}{plus}={total}" + (f", carry {next_carry}." if next_carry else "."))
        else:
            plus = f" + {carry}" if carry else ""
            carry_text = f" and carry {next_carry}" if next_carry else ""
            steps.append(f"Add the {PLACES[col]}: {x} + {y}{plus} = {total}, write {digit}{carry_text}.")
        written.insert(0, digit)
        carry = next_carry
    result = int("".join(written))
    if style != "compact":
        steps.append(f"So {a} + {b} = {result}.")
    return steps, result


def addition_task(a: int, b: int, style: str = "verbose") -> Task:
    """`a + b` with its solution and, when it carries, the dropped-carry flawed solution."""
    steps, result = addition_steps(a, b, style=style)
    flawed = None
    if has_carry(a, b):
        bad_steps, bad = addition_steps(a, b, drop_carry=True, style=style)
        flawed = Solution(bad_steps, f"\\boxed{{{bad}}}", flawed=True)
    return Task("arithmetic", f"What is {a} + {b}?", str(result), "math",
                Solution(steps, f"\\boxed{{{result}}}"), flawed_solution=flawed,
                meta={"op": "+", "a": a, "b": b, "carry": flawed is not None})


def subtraction_task(a: int, b: int) -> Task:
    """`a - b` (a >= b) by columns with borrows."""
    da, db = _digits(a), _digits(b) + [0] * (len(str(a)) - len(str(b)))
    steps, borrow = [], 0
    for col, (x, y) in enumerate(zip(da, db)):
        x -= borrow
        borrow = int(x < y)
        top = x + 10 * borrow
        note = f"{x} < {y}, borrow 1 from the {PLACES[col + 1]}: " if borrow else ""
        steps.append(f"Subtract the {PLACES[col]}: {note}{top} - {y} = {top - y}.")
    steps.append(f"So {a} - {b} = {a - b}.")
    return Task("arithmetic", f"What is {a} - {b}?", str(a - b), "math", Solution(steps, f"\\boxed{{{a - b}}}"),
                meta={"op": "-", "a": a, "b": b})


def multiplication_task(a: int, b: int) -> Task:
    """A multi-digit number times one digit, column by column with carries."""
    steps, carry = [], 0
    digits = _digits(a)
    for col, x in enumerate(digits):
        total = x * b + carry
        plus = f" + {carry}" if carry else ""
        last = col == len(digits) - 1
        carry_text = "" if last or total < 10 else f", write {total % 10} and carry {total // 10}"
        steps.append(f"Multiply the {PLACES[col]}: {x} x {b}{plus} = {total}{carry_text}.")
        carry = 0 if last else total // 10
    steps.append(f"So {a} x {b} = {a * b}.")
    return Task("arithmetic", f"What is {a} x {b}?", str(a * b), "math", Solution(steps, f"\\boxed{{{a * b}}}"),
                meta={"op": "x", "a": a, "b": b})


def arithmetic_task(rng: random.Random) -> Task:
    """One problem: 1- to 3-digit addition, subtraction, or multiplication by a digit."""
    op = rng.choice("++-x")
    digits = rng.choice([1, 2, 2, 3])
    lo, hi = (1, 9) if digits == 1 else (10 ** (digits - 1), 10 ** digits - 1)
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if op == "+":
        return addition_task(a, b)
    if op == "-":
        return subtraction_task(max(a, b), min(a, b))
    return multiplication_task(a, rng.randint(2, 9))


def addition_only_task(rng: random.Random) -> Task:
    """One- or two-digit addition in the compact style: the arithmetic a 1M-parameter model can learn from a
    few hundred samples (one-digit sums are the auto_think judge's simple problems, two-digit ones its
    multi-step problems).

    >>> task = addition_only_task(random.Random(0))
    >>> task.kind, task.source
    ('math', 'addition')
    """
    digits = rng.choice([1, 2, 2])
    lo, hi = (1, 9) if digits == 1 else (10, 99)
    task = addition_task(rng.randint(lo, hi), rng.randint(lo, hi), style="compact")
    task.source = "addition"
    return task
