"""The reward_model stage's parts: pairs in both formats, the starting model (Keye's decoder, exactly), the
training text equal to the served text, and the held-out metrics against hand-computed values."""

import json

import datasets
import numpy as np
import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSequenceClassification,
                          AutoTokenizer)

from posttrain.recipe import Recipe
from posttrain.reward_model_init import init_reward_model
from posttrain.recipe import RewardModelStage
from posttrain.stages.reward_model import (evaluate_pairs, load_preference_pairs, pair_batch, split_pairs,
                                           train_and_held_out)
from rewards.reward_model import RewardModelScorer
from rewards.sample import Sample

OURS = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "chosen": "\\boxed{5}", "rejected": "\\boxed{6}",
        "chosen_reward": 1.0, "rejected_reward": 0.0}


def test_pairs_read_the_same_from_rejection_sampling_and_from_trls_formats(tmp_path):
    expected = [{"messages": OURS["messages"], "chosen": "\\boxed{5}", "rejected": "\\boxed{6}"}]
    ours = tmp_path / "pairs.jsonl"
    ours.write_text(json.dumps(OURS) + "\n")
    assert load_preference_pairs(ours) == expected
    standard = tmp_path / "standard.parquet"  # TRL's standard form: text prompt and answers
    datasets.Dataset.from_list([{"prompt": "What is 2 + 3?", "chosen": "\\boxed{5}", "rejected": "\\boxed{6}"}]) \
        .to_parquet(str(standard))
    assert load_preference_pairs(standard) == expected
    conversational = tmp_path / "conversational.jsonl"  # TRL's conversational form, under other column names
    conversational.write_text(json.dumps({"question": OURS["messages"],
                                          "good": [{"role": "assistant", "content": "\\boxed{5}"}],
                                          "bad": [{"role": "assistant", "content": "\\boxed{6}"}]}) + "\n")
    assert load_preference_pairs(conversational, {"prompt": "question", "chosen": "good", "rejected": "bad"}) \
        == expected


def test_bad_pairs_name_the_row_and_what_it_lacks(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl row 1: a pair needs .* lacks \['rejected'\]"):
        load_preference_pairs(path)
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}) + "\n")
    with pytest.raises(ValueError, match="row 1: chosen and rejected are the same text"):
        load_preference_pairs(path)
    path.write_text(json.dumps({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match="must be text or a list of assistant messages"):
        load_preference_pairs(path)


def test_held_out_split_is_seeded_disjoint_and_refuses_an_empty_side():
    pairs = [{"id": i, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(10)]
    train, held = split_pairs(pairs, 0.2, seed=3)
    assert (len(train), len(held)) == (8, 2) and split_pairs(pairs, 0.2, seed=3) == (train, held)
    assert sorted(p["id"] for p in train + held) == list(range(10))
    with pytest.raises(ValueError, match="3 pairs of 3 prompts cannot be split with eval_fraction 0.1"):
        split_pairs(pairs[:3], 0.1, seed=0)


def test_an_eval_pairs_file_is_the_held_out_set_and_every_pairs_row_trains(tmp_path):
    rows = [{**OURS, "messages": [{"role": "user", "content": f"What is {i} + 3?"}]} for i in range(10)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:7]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[7:]))
    stage = RewardModelStage(eval_pairs=str(tmp_path / "test.jsonl"))
    train, held = train_and_held_out(stage, tmp_path / "train.jsonl", seed=0)
    assert [p["messages"] for p in train] == [r["messages"] for r in rows[:7]]
    assert [p["messages"] for p in held] == [r["messages"] for r in rows[7:]]
    # without it, a seeded fifth of the prompts is held out of the one file
    train, held = train_and_held_out(RewardModelStage(), tmp_path / "train.jsonl", seed=0)
    assert (len(train), len(held)) == (6, 1)


def test_held_out_split_keeps_each_prompts_pairs_together():
    one_each = [{"id": i, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(10)]
    # `pairs: all`: prompt i has i % 3 + 1 pairs, in a row as rejection sampling writes them
    many = [{**p, "k": k} for p in one_each for k in range(p["id"] % 3 + 1)]
    train, held = split_pairs(many, 0.2, seed=3)
    assert {p["id"] for p in train}.isdisjoint(p["id"] for p in held) and len(train) + len(held) == len(many)
    # the same prompts are held out as with one pair each, so the two pairings compare on the same prompts
    assert {p["id"] for p in held} == {p["id"] for p in split_pairs(one_each, 0.2, seed=3)[1]}
    assert len(held) == sum(p["id"] % 3 + 1 for p in split_pairs(one_each, 0.2, seed=3)[1])


def test_a_keye_policy_becomes_a_text_reward_model_with_its_decoder_exactly(tiny_model_dir, tmp_path):
    assert init_reward_model(tiny_model_dir, tmp_path / "rm") == "Qwen3ForSequenceClassification"
    policy = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir)).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm")).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        # on text, 3-D RoPE is plain RoPE: the policy's logits from the RM's decoder equal its own
        assert torch.equal(policy.lm_head(rm.model(input_ids=ids).last_hidden_state), policy(input_ids=ids).logits)
        assert rm(input_ids=ids).logits.item() == 0.0  # the head starts at zero: no reward until trained


def test_the_frozen_lm_head_is_the_policys_output_layer(tiny_model_dir, make_llama_dir, tmp_path):
    from safetensors.torch import load_file

    from posttrain.reward_model_init import FROZEN_LM_HEAD

    init_reward_model(tiny_model_dir, tmp_path / "keye", frozen_lm_head=True)
    policy = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir))
    assert torch.equal(load_file(str(tmp_path / "keye" / FROZEN_LM_HEAD))["weight"], policy.lm_head.weight)
    init_reward_model(tiny_model_dir, tmp_path / "plain")
    assert not (tmp_path / "plain" / FROZEN_LM_HEAD).exists()  # only when the loss asks for it
    tied = make_llama_dir(tmp_path / "tied", tied=True)  # no lm_head.weight saved: the input embedding is it
    init_reward_model(tied, tmp_path / "from-tied", frozen_lm_head=True)
    llama = AutoModelForCausalLM.from_pretrained(str(tied))
    assert torch.equal(load_file(str(tmp_path / "from-tied" / FROZEN_LM_HEAD))["weight"],
                       llama.get_output_embeddings().weight)


def test_a_causal_lm_becomes_a_reward_model_through_transformers(llama_dir, tmp_path):
    assert init_reward_model(llama_dir, tmp_path / "rm") == "LlamaForSequenceClassification"
    assert AutoTokenizer.from_pretrained(str(tmp_path / "rm")).get_vocab() == \
        AutoTokenizer.from_pretrained(str(llama_dir)).get_vocab()


def test_the_training_text_is_the_text_the_reward_serves(tiny_model_dir, tmp_path):
    init_reward_model(tiny_model_dir, tmp_path / "rm")
    scorer = RewardModelScorer(str(tmp_path / "rm"), max_length=64)
    pair = load_pairs_of(OURS)
    batch = pair_batch([pair], scorer.tokenizer, max_length=64)
    served = [scorer.text(Sample(prompt=pair["messages"], completion=pair[s])) for s in ("chosen", "rejected")]
    for row, text in enumerate(served):
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert real == scorer.tokenizer(text)["input_ids"]
    assert batch.chosen.tolist() == [True, False] and batch.group_ids.tolist() == [0, 0]
    assert batch.attention_mask[:, 0].all()  # right padding: the head pools each row's last real token
    prompt = len(scorer.tokenizer(scorer.text(Sample(prompt=pair["messages"], completion="")).split(
        "<|im_start|>assistant")[0])["input_ids"])  # the loss mask (the SFT term's tokens) starts at the answer
    assert (batch.loss_mask[:, :prompt] == 0).all()
    assert torch.equal(batch.loss_mask[:, prompt:], batch.attention_mask[:, prompt:])


def load_pairs_of(row):
    return {"messages": row["messages"], "chosen": row["chosen"], "rejected": row["rejected"]}


def test_held_out_metrics_match_hand_computed_values(tmp_path, tiny_model_dir, monkeypatch):
    init_reward_model(tiny_model_dir, tmp_path / "rm")
    # stand-in scores through the real scorer's call: chosen, rejected per pair
    scores = [2.0, 1.0, 0.5, 1.5, 3.0, 0.0]
    monkeypatch.setattr(RewardModelScorer, "__call__", lambda self, samples: scores[:len(samples)])
    metrics = evaluate_pairs(tmp_path / "rm", [load_pairs_of(OURS)] * 3, max_length=64)
    chosen, rejected = np.array(scores[0::2]), np.array(scores[1::2])
    # AUC: of the 9 (chosen, rejected) combinations, chosen wins 2>1, 2>0, 0.5>0, 3>1, 3>1.5, 3>0 and 2>1.5
    assert metrics == {"pairs": 3, "accuracy": pytest.approx(2 / 3), "margin": pytest.approx((chosen - rejected).mean()),
                       "auc": pytest.approx(7 / 9)}
    # pairs that carry their mode (rejection sampling writes it) are also counted per mode
    modes = [{**load_pairs_of(OURS), "mode": mode} for mode in ("think", "no_think", "think")]
    assert evaluate_pairs(tmp_path / "rm", modes, max_length=64)["by_mode"] == {
        "no_think": {"pairs": 1, "accuracy": 0.0}, "think": {"pairs": 2, "accuracy": 1.0}}


def test_a_reward_naming_a_stage_the_recipe_lacks_fails_at_load_time():
    recipe = {"name": "x", "stages": [{"kind": "reward_model", "name": "rm"}, {"kind": "rl", "steps": 1}],
              "reward": {"components": [{"spec": "math"},
                                        {"spec": "reward_model", "options": {"model": "stage:judge"}}]}}
    with pytest.raises(Exception, match=r"'stage:judge' names no reward_model stage of this recipe \(named ones: "
                                        r"\['rm'\]\)"):
        Recipe.model_validate(recipe)
    recipe["reward"]["components"][1]["options"]["model"] = "stage:rm"
    parsed = Recipe.model_validate(recipe)
    assert parsed.stages[0].learner == {"loss": {"name": "bradley_terry"}, "freeze": []}
    recipe["stages"][0]["learner"] = {"lr": 3e-4, "loss": {"args": {"sft_weight": 1.0}}}  # the loss keeps its name
    assert Recipe.model_validate(recipe).stages[0].learner == {
        "lr": 3e-4, "freeze": [], "loss": {"name": "bradley_terry", "args": {"sft_weight": 1.0}}}
    with pytest.raises(FileNotFoundError, match="stage 'rm': .* holds no trained model yet; that stage must run"):
        parsed.stage_output("stage:rm")
