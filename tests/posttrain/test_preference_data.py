"""Preference pairs from a data file: encoded like SFT rows, grouped in the batch, bad rows named."""

import json
from types import SimpleNamespace

import pytest
import torch

from posttrain.stages.preference import load_pairs, pair_batch
from posttrain.stages.rejection_sample import accepted_answer, best_and_worst, every_pair
from rollout.encoding import PromptEncoder

ROW = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "mode": "no_think",
       "chosen": "\\boxed{5}", "rejected": "\\boxed{6}"}


def context(tmp_path, rows):
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return SimpleNamespace(data_file=lambda name: tmp_path / name)


def test_pairs_become_chosen_rejected_rows_of_one_group(tmp_path, tiny_tokenizer):
    encoder = PromptEncoder(tiny_tokenizer)
    pairs = load_pairs(context(tmp_path, [ROW, {**ROW, "chosen": "\\boxed{5} because 2+3=5"}]), encoder)
    batch = pair_batch(pairs, encoder.pad_id)
    assert batch.chosen.tolist() == [True, False, True, False] and batch.group_ids.tolist() == [0, 0, 1, 1]
    answer = encoder.text_ids("\\boxed{5}") + encoder.text_ids("<|im_end|>")
    trained = batch.input_ids[0][batch.loss_mask[0].bool()].tolist()
    assert trained == answer  # loss on the answer only, as an SFT row of the same text
    assert torch.equal(batch.input_ids[0][:pairs[0][0].prompt_len], batch.input_ids[1][:pairs[0][1].prompt_len])
    batch.validate()


def test_bad_pair_files_are_named_with_the_fix(tmp_path, tiny_tokenizer):
    encoder = PromptEncoder(tiny_tokenizer)
    with pytest.raises(FileNotFoundError, match="rejection_sample stage"):
        load_pairs(SimpleNamespace(data_file=lambda name: tmp_path / name), encoder)
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: row lacks \['rejected'\]"):
        load_pairs(context(tmp_path, [ROW, {k: v for k, v in ROW.items() if k != "rejected"}]), encoder)
    with pytest.raises(ValueError, match="pairs.jsonl:1: chosen and rejected are the same text"):
        load_pairs(context(tmp_path, [{**ROW, "rejected": ROW["chosen"]}]), encoder)


def test_rejection_sampling_keeps_best_vs_worst_and_accepts_by_threshold():
    row = {"id": "q1", "prompt": "What is 2 + 3?", "mode": "think"}
    answers = [(0.1, "a"), (1.1, "b"), (1.1, "c"), (0.0, "b")]  # the worst has the best's text: not a pair
    (pair,) = best_and_worst(row, answers)
    assert (pair["chosen"], pair["rejected"], pair["chosen_reward"], pair["rejected_reward"]) == ("b", "a", 1.1, 0.1)
    assert best_and_worst(row, [(1.0, "x"), (1.0, "y")]) == []  # nothing to prefer
    assert best_and_worst(row, []) == [] and accepted_answer(row, [], accept=0.0) == []
    assert accepted_answer(row, answers, accept=1.0)[0]["messages"][-1] == {"role": "assistant", "content": "b"}
    assert accepted_answer(row, answers, accept=1.5) == []


def test_all_pairs_are_every_better_against_every_worse_distinct_answer():
    row = {"id": "q1", "prompt": "What is 2 + 3?", "mode": "no_think"}
    answers = [(0.0, "6"), (1.0, "5"), (0.0, "4"), (1.0, "5"), (0.5, "5.0"), (0.0, "6")]
    pairs = every_pair(row, answers)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [  # best vs worst first, as best_and_worst gives it
        ("5", "6"), ("5", "4"), ("5", "5.0"), ("5.0", "6"), ("5.0", "4")]
    assert pairs[0] == best_and_worst(row, answers)[0]
    assert [(p["chosen_reward"], p["rejected_reward"]) for p in pairs[2:4]] == [(1.0, 0.5), (0.5, 0.0)]
    assert every_pair(row, [(1.0, "x"), (1.0, "y")]) == [] and every_pair(row, []) == []


def test_failed_rewards_errors_and_image_answers_take_no_part():
    from types import SimpleNamespace as S

    from posttrain.stages.rejection_sample import usable
    answers = [S(text="ok", finish_reason="stop", images=[]), S(text="timed out", finish_reason="stop", images=[]),
               S(text="skipped", finish_reason="stop", images=[]), S(text="", finish_reason="error", images=[]),
               S(text="<zoom>", finish_reason="stop", images=["crop.png"])]
    results = [S(total=1.0, error=None), S(total=0.0, error="timeout"), S(total=None, error="exception"),
               S(total=0.0, error=None), S(total=1.0, error=None)]
    assert usable(answers, results) == [(1.0, "ok")]
