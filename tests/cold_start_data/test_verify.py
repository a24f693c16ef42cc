import pytest

from cold_start_data.verify import gold_problem, verify


@pytest.mark.parametrize("response, mode, kind, answer, ok", [
    ("<think>7+5=12</think><answer>\\boxed{12}</answer>", "think", "math", "12", True),
    ("<think>7+5=12</think><answer>\\boxed{12.0}</answer>", "think", "math", "12", True),  # math-verify equality
    ("\\boxed{13}", "no_think", "math", "12", False),
    ("<think>7+5=12</think>\\boxed{12}", "think", "math", "12", False),  # no <answer>: wrong format
    ("\\boxed{4}", "no_think", "count", "4", True),
    ("\\boxed{4.5}", "no_think", "count", "4", False),
    ("<|box_start|>[[100,100,200,200]]<|box_end|>", "no_think", "boxes", "[[100,100,200,200]]", True),
    ("<|box_start|>[[100,100,200,300]]<|box_end|>", "no_think", "boxes", "[[100,100,200,200]]", True),  # IoU .5
    ("<|box_start|>[[100,100,200,400]]<|box_end|>", "no_think", "boxes", "[[100,100,200,200]]", False),  # 1/3
    ("\\boxed{red}", "no_think", "text", "red", True),
    ("\\boxed{der}", "no_think", "text", "red", False),  # math-verify would call r*e*d == d*e*r
    ("\\boxed{3,1,2}", "no_think", "order", "3,1,2", True),
    ("\\boxed{3,2,1}", "no_think", "order", "3,1,2", False),
])
def test_verdicts(response, mode, kind, answer, ok):
    assert verify(response, mode, kind, answer).ok is ok


def test_reasons():
    assert verify("\\boxed{13}", "no_think", "math", "12").reason == "wrong answer"
    assert verify("<think>x</think>", "think", "math", "12").reason.startswith("format: ")


@pytest.mark.parametrize("kind, answer, bad", [
    ("math", "12", False), ("math", "", True), ("math", "???", True), ("math", "\\frac{1}{", True),
    ("math", "1/2", False), ("count", "3", False), ("count", "three", True),
    ("boxes", "[[1,2,3,4]]", False), ("boxes", "[[1,2,3]]", True), ("order", "1,2", False), ("order", "a", True),
])
def test_gold_answers_that_cannot_be_verified(kind, answer, bad):
    assert (gold_problem(kind, answer) is not None) is bad
