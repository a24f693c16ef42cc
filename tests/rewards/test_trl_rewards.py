"""TRL's own reward functions (`trl.rewards`), unchanged, through the adapter and through `posttrain reward check`.

TRL's shipped rewards declare ``completions: list[list[dict[str, str]]]`` and read ``completion[0]["content"]``;
they must get message lists on text rows too, the ground truth under TRL's column name ``solution`` whatever the
row calls it, and their factories (``get_*``) must be built from options. Expected values are computed by hand.
"""

from __future__ import annotations

import json

import pytest

from posttrain.cli import main
from rewards import RewardSpecError, Sample, load_reward, validate_reward
from rewards.adapters import trl_arguments

trl_rewards = pytest.importorskip("trl.rewards")

RIGHT = "<think>\nOne third of one is one third.\n</think>\nThe answer is \\boxed{\\frac{1}{3}}"
WRONG = "The answer is \\boxed{\\frac{1}{3}}"  # no think block; and the gold answer of its row is 1/2
IDS = [list(range(50)), [5] * 100]  # 50 distinct tokens; 100 copies of one token


def plain_rows() -> list[dict]:
    return [{"prompt": "What is 1/3 of 1?", "completion": RIGHT, "solution": "\\frac{1}{3}", "completion_ids": IDS[0]},
            {"prompt": "What is 1/2 of 1?", "completion": WRONG, "solution": "\\frac{1}{2}", "completion_ids": IDS[1]}]


def conversational_rows() -> list[dict]:
    """The same rows as TRL's conversational datasets hold them, the ground truth named `answer` (ours)."""
    rows = []
    for row in plain_rows():
        rows.append({"prompt": [{"role": "user", "content": row["prompt"]}],
                     "completion": [{"role": "assistant", "content": row["completion"]}],
                     "answer": row["solution"], "completion_ids": row["completion_ids"]})
    return rows


def samples(rows: list[dict]) -> list[Sample]:
    return [Sample.from_row(row) for row in rows]


BOTH = pytest.mark.parametrize("rows", [plain_rows, conversational_rows], ids=["plain", "conversational"])


@BOTH
def test_think_format_reward(rows):
    reward = load_reward("trl.rewards:think_format_reward")
    assert reward.form == "trl"
    assert reward(samples(rows())) == [1.0, 0.0]  # only the first starts with <think>...</think>


@BOTH
def test_accuracy_reward_reads_the_ground_truth_as_solution(rows):
    assert load_reward("trl.rewards:accuracy_reward")(samples(rows())) == [1.0, 0.0]  # 1/3 == 1/3; 1/3 != 1/2


@BOTH
def test_reasoning_accuracy_reward(rows):
    # the second completion never closes a think block: TRL scores incomplete reasoning 0, not None
    assert load_reward("trl.rewards:reasoning_accuracy_reward")(samples(rows())) == [1.0, 0.0]


def test_accuracy_reward_skips_an_unparseable_gold_answer():
    rows = plain_rows()
    rows[1]["solution"] = "no math here"
    assert load_reward("trl.rewards:accuracy_reward")(samples(rows)) == [1.0, None]


@BOTH
def test_cosine_scaled_reward_is_built_from_options(rows):
    reward = load_reward("trl.rewards:get_cosine_scaled_reward", max_len=100)
    assert (reward.form, reward.name) == ("trl", "cosine_scaled_reward")
    # correct at 50/100 tokens: 0.5 + 0.5 * (1.0 - 0.5) * (1 + cos(pi/2)) = 0.75
    # wrong at 100/100 tokens: -0.5 + 0.5 * (-1.0 + 0.5) * (1 + cos(pi)) = -0.5
    assert reward(samples(rows())) == pytest.approx([0.75, -0.5])


@BOTH
def test_repetition_penalty_reward_reads_completion_ids(rows):
    reward = load_reward("trl.rewards:get_repetition_penalty_reward", ngram_size=2, max_penalty=-1.0)
    assert reward.form == "trl"  # it names only `completion_ids`: TRL's keyword, not a native sample argument
    # 49 distinct bigrams: 0; 99 bigrams, 1 distinct: (1 - 1/99) * -1
    assert reward(samples(rows())) == pytest.approx([0.0, -98 / 99])


@BOTH
def test_soft_overlong_punishment(rows):
    reward = load_reward("trl.rewards:get_soft_overlong_punishment", max_completion_len=110, soft_punish_cache=20)
    assert reward(samples(rows())) == pytest.approx([0.0, -0.5])  # 50 <= 90; (90 - 100) / 20


def test_every_function_trl_rewards_exports_is_covered_here():
    covered = {"think_format_reward", "accuracy_reward", "reasoning_accuracy_reward", "get_cosine_scaled_reward",
               "get_repetition_penalty_reward", "get_soft_overlong_punishment"}
    exported = {name for names in trl_rewards._import_structure.values() for name in names}
    assert exported == covered  # a new TRL reward needs a test above


def test_a_factory_without_its_options_or_with_unknown_ones_is_refused():
    with pytest.raises(RewardSpecError, match=r"factory.*needs the options \['max_len'\].*--options"):
        validate_reward("trl.rewards:get_cosine_scaled_reward")
    with pytest.raises(RewardSpecError, match=r"does not take the options \['bogus'\]"):
        load_reward("trl.rewards:get_cosine_scaled_reward", max_len=100, bogus=1)
    assert validate_reward("trl.rewards:get_cosine_scaled_reward", max_len=100) == "factory"


def test_completions_follow_trls_rule_unless_the_annotation_says_otherwise():
    def unannotated(completions, **kwargs):
        return [0.0] * len(completions)

    def text_only(completions: list[str], **kwargs):
        return [float(isinstance(c, str)) for c in completions]

    mixed = samples([plain_rows()[0], conversational_rows()[1]])
    # TRL's rule, per prompt: text for a text prompt, one assistant message for a conversation
    got = trl_arguments(mixed)
    assert got["completions"] == [RIGHT, [{"role": "assistant", "content": WRONG}]]
    assert got["prompts"] == ["What is 1/3 of 1?", [{"role": "user", "content": "What is 1/2 of 1?"}]]
    assert got["solution"] == ["\\frac{1}{3}", "\\frac{1}{2}"]  # a `solution` column, then `answer`
    assert load_reward(text_only)(mixed) == [1.0, 1.0]
    assert load_reward(unannotated).form == "trl"


def test_reward_check_cli_on_two_rows(tmp_path, capsys):
    for rows in (plain_rows(), conversational_rows()):
        data = tmp_path / "rows.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        for spec in ("trl.rewards:think_format_reward", "trl.rewards:accuracy_reward"):
            code = main(["reward", "check", "--reward", spec, "--data", str(data)])
            out, err = capsys.readouterr()
            lines = [json.loads(line) for line in out.splitlines()]
            assert code == 0, err
            assert [(r["total"], r["error"]) for r in lines] == [(1.0, None), (0.0, None)], (spec, lines)
