"""The `answer` reward scores each row of a mixed batch with its own task's check."""

import pytest

from rewards.registry import load_reward
from rewards.sample import Sample


def score(kind, completion, gold):
    sample = Sample(prompt="q /no_think", completion=completion, ground_truth=gold,
                    columns={"kind": kind} if kind else {})
    return load_reward("answer")([sample])[0]


@pytest.mark.parametrize("kind, completion, gold, expected", [
    ("math", "\\boxed{0.5}", "1/2", 1.0),            # math-verify equality, not string equality
    (None, "\\boxed{12}", "13", 0.0),                # no kind column: math
    ("count", "There are seven.", "7", 1.0),
    ("count", "6", "7", 0.0),                        # no partial credit for counts
    ("boxes", "[[0,0,100,100]]", "[[0,0,100,50]]", 0.5),  # IoU 5000 / 10000
    ("text", "\\text{Red}.", "red", 1.0),
    ("text", "red", "rd", 0.0),
    ("order", "3, 1, 2", "[3, 1, 2]", 1.0),
    ("order", "1, 2, 3", "[3, 1, 2]", 0.0),
])
def test_each_kind_uses_its_check(kind, completion, gold, expected):
    assert score(kind, completion, gold) == pytest.approx(expected)


def test_unknown_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match="'colour'.*math"):
        score("colour", "red", "red")
