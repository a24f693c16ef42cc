"""Multi-step word problems (shopping, sharing, travelling) with one reasoning step per operation.

Every template draws numbers so that all intermediate results are non-negative integers. The step count
(2-4) is the problem's difficulty as the auto_think judge sees it. This module knows nothing about modes.
"""

from __future__ import annotations

import random

from cold_start_data.tasks import Solution, Task

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "cards", "shells", "books"]


def _buy_and_give(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start, bags, per_bag = rng.randint(5, 60), rng.randint(2, 9), rng.randint(2, 12)
    bought = bags * per_bag
    given = rng.randint(1, start + bought)
    total = start + bought - given
    prompt = (f"{name} has {start} {item}. {name} buys {bags} bags with {per_bag} {item} each, then gives "
              f"away {given}. How many {item} does {name} have now?")
    steps = [f"{name} buys {bags} x {per_bag} = {bought} {item}.",
             f"Then {name} has {start} + {bought} = {start + bought} {item}.",
             f"After giving away {given}: {start + bought} - {given} = {total}."]
    return prompt, steps, total


def _share(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each, left = rng.randint(2, 8), rng.randint(2, 15), rng.randint(0, 9)
    total = friends * each + left
    prompt = (f"{name} shares {total} {item} equally among {friends} friends and keeps what is left over. "
              f"How many {item} does each friend get?")
    steps = [f"{total} divided by {friends}: {friends} x {each} = {friends * each}, which is at most {total}.",
             f"{friends} x {each + 1} = {friends * (each + 1)} would be more than {total}.",
             f"So each friend gets {each} {item} (and {left} are left over)."]
    return prompt, steps, each


def _trip(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    speed, hours, extra = rng.randint(20, 90), rng.randint(2, 6), rng.randint(5, 80)
    first = speed * hours
    total = first + extra
    prompt = (f"{name} drives at {speed} km per hour for {hours} hours and then walks {extra} km more. "
              f"How many km does {name} travel in total?")
    steps = [f"Driving: {speed} x {hours} = {first} km.", f"Total: {first} + {extra} = {total} km."]
    return prompt, steps, total


def _shop(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    n_pens, pen, n_books, book = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 4), rng.randint(10, 30)
    pens, books = n_pens * pen, n_books * book
    cost = pens + books
    paid = (cost // 50 + 1) * 50
    prompt = (f"{name} buys {n_pens} pens at {pen} dollars each and {n_books} books at {book} dollars each, and "
              f"pays with {paid} dollars. How much change does {name} get?")
    steps = [f"Pens: {n_pens} x {pen} = {pens} dollars.", f"Books: {n_books} x {book} = {books} dollars.",
             f"Total cost: {pens} + {books} = {cost} dollars.", f"Change: {paid} - {cost} = {paid - cost} dollars."]
    return prompt, steps, paid - cost


def addition_story(a: int, b: int) -> str:
    """`a + b` as a one-step story, the same story for the same pair (train and held-out rows agree).

    >>> addition_story(37, 45)
    'Eli has 37 cookies and buys 45 more. How many cookies does Eli have now?'
    """
    rng = random.Random(f"story:{a}+{b}")
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    verb = rng.choice(["buys", "finds", "gets", "is given"])
    return f"{name} has {a} {item} and {verb} {b} more. How many {item} does {name} have now?"


TEMPLATES = [_buy_and_give, _share, _trip, _shop]


def word_problem_task(rng: random.Random) -> Task:
    template = rng.choice(TEMPLATES)
    prompt, steps, answer = template(rng)
    return Task("word_problem", prompt, str(answer), "math", Solution(steps, f"\\boxed{{{answer}}}"),
                meta={"template": template.__name__.lstrip("_")})
