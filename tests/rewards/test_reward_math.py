"""The math reward against a hand-checked equivalence table, and the answer-extraction protocol."""

from __future__ import annotations

import pytest

from rewards.math_answer import answer_text, answers_match, math_reward
from rewards.sample import Sample
from keye_protocol.chat import parse_response


def think(answer: str) -> str:
    return f"<think>work it out</think><answer>{answer}</answer>"


# (model's answer text inside <answer>, ground truth, equal?)
TABLE = [
    # fractions
    (r"\boxed{\frac{1}{2}}", "1/2", True),
    (r"\boxed{\dfrac{3}{4}}", "0.75", True),
    (r"\boxed{2/4}", r"\frac12", True),
    (r"\boxed{\frac{2}{3}}", "0.67", False),
    (r"\boxed{\frac{1}{3}}", "1/4", False),
    (r"\boxed{-\frac{5}{2}}", "-2.5", True),
    (r"\boxed{\frac{5}{2}}", "-2.5", False),
    # decimals and integers
    (r"\boxed{0.5}", r"\frac{1}{2}", True),
    (r"\boxed{3.14}", r"\pi", False),
    (r"\boxed{1.50}", "1.5", True),
    (r"\boxed{1000}", "1,000", True),
    (r"\boxed{10^{3}}", "1000", True),
    (r"\boxed{42}", "42", True),
    (r"\boxed{43}", "42", False),
    (r"\boxed{-7}", "-7", True),
    (r"\boxed{7}", "-7", False),
    (r"\boxed{0.333}", "1/3", False),
    # percentages
    (r"\boxed{50\%}", "0.5", True),
    (r"\boxed{12.5\%}", "0.125", True),
    (r"\boxed{0.125}", r"12.5\%", True),
    (r"\boxed{25\%}", "0.5", False),
    (r"\boxed{50\%}", "1/2", True),
    # sets
    (r"\boxed{\{1, 2\}}", r"\{2, 1\}", True),
    (r"\boxed{\{1, 2, 3\}}", r"\{1, 2\}", False),
    (r"\boxed{1, 2}", r"\{1,2\}", True),
    (r"\boxed{\{-1, 1\}}", r"\{1, -1\}", True),
    (r"\boxed{\{0\}}", r"\{1\}", False),
    # intervals
    (r"\boxed{(0, 1]}", "(0,1]", True),
    (r"\boxed{(0, 1]}", "[0,1]", False),
    (r"\boxed{[1, 3)}", "[1,3)", True),
    (r"\boxed{(-\infty, 2]}", r"(-\infty, 2]", True),
    (r"\boxed{(-\infty, 2)}", r"(-\infty, 2]", False),
    (r"\boxed{x \in (0,1]}", "(0,1]", True),
    # expressions
    (r"\boxed{(x+1)^2}", "x^2+2x+1", True),
    (r"\boxed{x^2+2x+1}", "(x+1)^2", True),
    (r"\boxed{x^2+1}", "(x+1)^2", False),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\sqrt{2}/2", True),
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", True),
    (r"\boxed{\sqrt{3}}", r"\sqrt{12}", False),
    (r"\boxed{\sin^2 x + \cos^2 x}", "1", True),
    (r"\boxed{x = 5}", "5", True),
    (r"\boxed{x = 4}", "5", False),
    (r"\boxed{2a + b}", "b + 2a", True),
    (r"\boxed{a - b}", "b - a", False),
    (r"\boxed{\sqrt{16}}", "4", True),
    # plain text answers (no box: the fallback reads the answer text)
    ("The answer is 1/2.", "0.5", True),
    ("It is 12.", "12", True),
    ("It is 13.", "12", False),
    ("So x = 3", "3", True),
    ("half of it, 0.5", "1/2", True),
    # text (non-math) answers compare as normalised text
    (r"\boxed{\text{Paris}}", "Paris", True),
    (r"\boxed{Paris}", "paris", True),
    (r"\boxed{London}", "Paris", False),
    # LaTeX ground truth
    (r"\boxed{0.25}", r"\frac{1}{4}", True),
    (r"\boxed{4}", r"\boxed{4}", True),
    (r"\boxed{\infty}", r"\infty", True),
    # more wrong answers of each kind
    (r"\boxed{\frac{1}{2}}", "2", False),
    (r"\boxed{0.05}", r"50\%", False),
    (r"\boxed{[1, 3]}", "[1,3)", False),
    (r"\boxed{2x}", "x^2", False),
    ("I don't know.", "3", False),
    (r"\boxed{}", "3", False),
]


def test_table_is_large_and_balanced():
    assert len(TABLE) >= 50
    assert sum(equal for *_, equal in TABLE) >= 20 and sum(not equal for *_, equal in TABLE) >= 20


@pytest.mark.parametrize(("answer", "gold", "equal"), TABLE)
def test_equivalence_table(answer, gold, equal):
    sample = Sample(prompt="Solve it. /think", completion=think(answer), ground_truth=gold)
    assert math_reward(sample) == (1.0 if equal else 0.0)


def test_boxed_inside_answer_wins_over_reasoning_and_earlier_boxes():
    completion = r"<think>maybe \boxed{3}</think><answer>first \boxed{5}, finally \boxed{4}</answer>"
    assert math_reward(Sample(prompt="2+2? /think", completion=completion, ground_truth="4")) == 1.0
    assert math_reward(Sample(prompt="2+2? /think", completion=completion, ground_truth="3")) == 0.0


def test_unfinished_reasoning_has_no_answer():
    sample = Sample(prompt="2+2? /think", completion=r"<think>it is \boxed{4}", ground_truth="4")
    assert answer_text(sample.parsed) is None
    assert math_reward(sample) == 0.0


def test_no_think_answer_is_the_whole_text_after_an_empty_think():
    sample = Sample(prompt="2+2? /no_think", completion="<think>\n\n</think>The answer is 4.", ground_truth="4")
    assert math_reward(sample) == 1.0


def test_auto_think_reads_after_the_analysis():
    completion = "<analysis>simple: 5 is not the answer</analysis><answer>\\boxed{4}</answer>"
    assert math_reward(Sample(prompt="2+2? /auto_think", completion=completion, ground_truth="4")) == 1.0


def test_missing_ground_truth_is_an_error_not_zero():
    with pytest.raises(ValueError, match="ground truth"):
        math_reward(Sample(prompt="2+2?", completion="4"))


def test_answers_match_works_off_the_main_thread():
    """math-verify's own timeout uses signal.alarm, which fails in threads; ours is switched off."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(answers_match, r"\boxed{\frac{1}{2}}", "0.5").result(timeout=30) is True


def test_answer_text_follows_the_protocol():
    assert answer_text(parse_response(r"<think>a</think><answer>x \boxed{7}</answer>")) == r"\boxed{7}"
    assert answer_text(parse_response("<think>a</think><answer> 7 </answer>")) == "7"
