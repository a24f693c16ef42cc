"""Format rewards on well-formed and malformed outputs of every mode; repetition and overlong by hand."""

from __future__ import annotations

import pytest

from keye_protocol.chat import format_code_step, format_response
from rewards.format import analysis_decision, format_problems, format_reward
from rewards.overlong import overlong_penalty, soft_overlong_penalty
from rewards.repetition import repetition_penalty, repetition_rate
from rewards.sample import Sample

THINK_OK = "<think>2 + 2 = 4</think><answer>\\boxed{4}</answer>"
AGENTIC_OK = ("<think>Zoom in.\n" + format_code_step("print(image.size)", "(64, 32)")
              + "The sign says 4.</think><answer>\\boxed{4}</answer>")

WELL_FORMED = {
    "think": [THINK_OK, format_response("think", "\\boxed{4}", think="add"), "\n<think>a</think>\n<answer>b</answer>\n"],
    "no_think": ["4", "<think>\n\n</think>4", "<answer>4</answer>", format_response("no_think", "4")],
    "auto_think": [
        "<analysis>Simple arithmetic, answer directly.</analysis><answer>4</answer>",
        "<analysis>This is complex: it needs step-by-step reasoning.</analysis>" + THINK_OK,
        "<analysis>A sum of two digits.</analysis><answer>4</answer>",  # undecided analysis: either form
        "<analysis>A sum of two digits.</analysis>" + THINK_OK,
        format_response("auto_think", "4", analysis="simple, no need to think"),
    ],
    "agentic": [AGENTIC_OK, THINK_OK],
}
MALFORMED = {
    "think": [
        "4",                                                     # no tags
        "<think>2+2=4</think>4",                                 # no answer tags
        "<think>2+2=4<answer>4</answer>",                        # unclosed think
        "<think></think><answer>4</answer>",                     # empty reasoning
        "<think>a</think><answer></answer>",                     # empty answer
        "<answer>4</answer><think>a</think>",                    # wrong order
        "Sure! <think>a</think><answer>4</answer>",              # text before
        "<think>a</think><answer>4</answer> and more",           # text after
        "<think>a<think>b</think></think><answer>4</answer>",    # nested
        "<analysis>x</analysis><think>a</think><answer>4</answer>",  # analysis in think mode
    ],
    "no_think": [
        "<think>2+2 is 4</think>4",                              # reasons
        "<analysis>easy</analysis>4",                            # analyses
        "",                                                      # empty
        "<think>\n\n</think>",                                   # empty after the allowed prefix
        "<answer>4",                                             # unclosed answer
    ],
    "auto_think": [
        "<answer>4</answer>",                                    # no analysis
        THINK_OK,                                                # no analysis
        "<analysis></analysis><answer>4</answer>",               # empty analysis
        "<analysis>simple</analysis>4",                          # answer without tags
        "<analysis>Simple, answer directly.</analysis>" + THINK_OK,               # reasons against its decision
        "<analysis>Complex, needs careful reasoning.</analysis><answer>4</answer>",  # skips decided reasoning
        "<analysis>hmm<answer>4</answer>",                       # unclosed analysis
        "<analysis>a</analysis><think>x</think>4",               # think without answer
    ],
    "agentic": [
        "<think>```python\nprint(1)\n</think><answer>4</answer>",                # unclosed code block
        "<think>```python\nprint(1)\n```\nso 4</think><answer>4</answer>",      # code never run
        "<think>```python\n\n```\n<sandbox_output></sandbox_output></think><answer>4</answer>",  # empty code
        "```python\nprint(1)\n```\n<sandbox_output>1</sandbox_output> 4",        # no think/answer
    ],
}


@pytest.mark.parametrize(("mode", "text"), [(m, t) for m, ts in WELL_FORMED.items() for t in ts])
def test_well_formed(mode, text):
    assert format_problems(text, mode) == []
    assert format_reward(Sample(prompt=f"q /{'agentic_think' if mode == 'agentic' else mode}", completion=text)) == 1.0


@pytest.mark.parametrize(("mode", "text"), [(m, t) for m, ts in MALFORMED.items() for t in ts])
def test_malformed(mode, text):
    assert format_problems(text, mode) != []
    assert format_reward(Sample(prompt="q", mode=mode, completion=text)) == 0.0


def test_problems_name_what_is_wrong():
    assert format_problems("<think>x</think>2", "no_think") == ["no_think must not reason (non-empty <think>)"]
    assert format_problems("<analysis>Simple, answer directly.</analysis>" + THINK_OK, "auto_think") == [
        "the analysis decided to answer directly but the response reasons"]
    assert "code block without a <sandbox_output> (it was not run)" in format_problems(
        "<think>```python\nprint(1)\n```\nso</think><answer>4</answer>", "agentic")


def test_analysis_decision():
    assert analysis_decision("No need to think, it is a lookup.") is False
    assert analysis_decision("It does not require reasoning.") is False
    assert analysis_decision("Needs multi-step reasoning.") is True
    assert analysis_decision("Straightforward.") is False
    assert analysis_decision("A question about colours.") is None


def test_repetition_by_hand():
    assert repetition_rate("a b a b a b".split(), n=2) == pytest.approx(0.6)   # 2 unique of 5 bigrams
    assert repetition_rate("a b c d".split(), n=2) == 0.0
    assert repetition_rate("a b".split(), n=4) == 0.0                          # shorter than n
    assert repetition_rate([7, 7, 7, 7], n=1) == pytest.approx(0.75)          # 1 unique of 4
    ids = Sample(prompt="x", completion="ignored", completion_ids=[1, 2, 1, 2, 1, 2])
    assert repetition_penalty(ids, n=2) == pytest.approx(-0.6)                 # ids preferred over words


def test_overlong_by_hand():
    # L_max = 100, L_cache = 20: free up to 80; linear to -1 at 100; -1 beyond.
    assert soft_overlong_penalty(80, 100, 20) == 0.0
    assert soft_overlong_penalty(85, 100, 20) == pytest.approx(-0.25)
    assert soft_overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert soft_overlong_penalty(150, 100, 20) == -1.0
    assert overlong_penalty(Sample(prompt="x", completion="a b c", completion_ids=list(range(95))),
                            max_length=100, cache_length=20) == pytest.approx(-0.75)
    with pytest.raises(ValueError, match="cache_length"):
        soft_overlong_penalty(1, 10, 0)
