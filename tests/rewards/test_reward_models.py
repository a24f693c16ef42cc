"""Model-based rewards: a tiny random Qwen3 sequence classifier as reward model, and the outcome and consistency
judges on hand-written replies (a judge on a model, through the rollout engine: tests/posttrain/test_judge_engine.py)."""

from __future__ import annotations

import pytest
import torch

from rewards import RewardSpecError, load_reward
from rewards.judge import ConsistencyJudge, OutcomeJudge, parse_judge_score
from rewards.reward_model import RewardModelScorer
from rewards.sample import Sample


def tiny_qwen3(tokenizer, cls_name: str, **extra):
    import transformers

    config = transformers.Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      head_dim=16, pad_token_id=tokenizer.pad_token_id, **extra)
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(config).eval()


SAMPLES = [
    Sample(prompt="What is 2+2? /think", completion="<think>2+2=4</think><answer>\\boxed{4}</answer>"),
    Sample(prompt="What is 2+2? /no_think", completion="5"),
    Sample(prompt="Count the apples /no_think", completion="there are three apples on the table, and one more"),
]


def test_reward_model_scores_match_a_direct_forward_pass(tiny_tokenizer):
    model = tiny_qwen3(tiny_tokenizer, "Qwen3ForSequenceClassification", num_labels=1)
    reward = load_reward("reward_model", model=model, tokenizer=tiny_tokenizer, batch_size=2)
    assert reward.form == "native_batched"
    batched = reward(SAMPLES)
    scorer = reward.fn
    for sample, score in zip(SAMPLES, batched):
        ids = tiny_tokenizer(scorer.text(sample), return_tensors="pt")
        with torch.no_grad():
            direct = model(**ids).logits[0, 0].item()
        assert score == pytest.approx(direct, abs=1e-5)  # padding in the batch changes nothing
    assert len(set(round(s, 6) for s in batched)) == 3
    assert "<|im_start|>assistant\n<think>2+2=4</think>" in scorer.text(SAMPLES[0])


def test_reward_model_with_several_labels_needs_a_label_index(tiny_tokenizer):
    model = tiny_qwen3(tiny_tokenizer, "Qwen3ForSequenceClassification", num_labels=2)
    with pytest.raises(ValueError, match="label_index"):
        RewardModelScorer(model, tiny_tokenizer)
    assert len(RewardModelScorer(model, tiny_tokenizer, label_index=1)(SAMPLES[:2])) == 2


@pytest.mark.parametrize(("reply", "score"), [
    ("Score: 8", 0.8), ("score = 10/10", 1.0), ("**Rating**: 3/5", 0.6), ("I give it 7 out of 10.", 0.7),
    ("\\boxed{4}", 0.4), ("6", 0.6), ("Score: 0", 0.0), ("Yes, the reasoning supports it.", 1.0),
    ("No: the reasoning contradicts the answer.", 0.0), ("It is inconsistent.", 0.0),
    ("Score: 15", None), ("I am not sure", None), ("between 3 and 4", None), ("", None),
    ("<think>step 3 says 7, so 3 of 10?</think>Score: 9", 0.9), ("<think>still thinking", None),
    ("The answer 42 is wrong", 0.0),
])
def test_parse_judge_score(reply, score):
    parsed = parse_judge_score(reply)
    assert parsed == (pytest.approx(score) if score is not None else None)


def test_judge_asks_only_about_samples_that_reason_and_records_unparseable_replies():
    asked = []

    def generate(prompts):
        asked.extend(prompts)
        return ["Score: 9" for _ in prompts]

    judge = ConsistencyJudge(generate=generate)
    assert judge(SAMPLES) == [0.9, None, None]
    assert len(asked) == 1 and "2+2=4" in asked[0] and "Final answer:\n4" in asked[0]
    with pytest.raises(ValueError, match="no score"):
        ConsistencyJudge(generate=lambda prompts: ["I cannot say"] * len(prompts))(SAMPLES[:1])


@pytest.mark.parametrize(("reply", "score"), [
    ("Score: 1", 1.0), ("Score: 0", 0.0), ("Correct. Score: 1", 1.0), ("The final answer 5 is incorrect.", 0.0),
    ("Yes, 4 is equivalent to the reference.", 1.0), ("Not equivalent.", 0.0), ("<think>4 = 4</think>1", 1.0),
    ("**Score**: 0", 0.0),
])
def test_outcome_judge_reads_hand_written_replies(reply, score):
    asked = []

    def generate(prompts):
        asked.extend(prompts)
        return [reply] * len(prompts)

    samples = [Sample(prompt="What is 2+2? /no_think", completion="\\boxed{5}", ground_truth="4"),
               Sample(prompt="What is 2+2? /no_think", completion="5"),  # no reference: not applicable
               Sample(prompt="What is 2+2? /think", completion="<think>2+2", ground_truth="4")]  # no answer: 0
    assert OutcomeJudge(generate=generate)(samples) == [pytest.approx(score), None, 0.0]
    assert asked == ["Judge whether a response's final answer is correct.\n\nQuestion:\nWhat is 2+2? /no_think\n\n"
                     "Reference answer:\n4\n\nResponse's final answer:\n5\n\nIs the response's final answer "
                     "equivalent to the reference answer? Reply with \"Score: 1\" if it is and \"Score: 0\" if it "
                     "is not."]


@pytest.mark.parametrize(("reply", "score"), [("Score: 7", 0.7), ("7/10", 0.7), ("Yes, it supports the answer.", 1.0),
                                              ("No.", 0.0), ("<think>hmm</think>\\boxed{3}", 0.3)])
def test_consistency_judge_reads_hand_written_replies(reply, score):
    judge = ConsistencyJudge(generate=lambda prompts: [reply] * len(prompts))
    assert judge(SAMPLES) == [pytest.approx(score), None, None]


def test_a_judge_takes_a_generate_callable_and_refuses_model_options():
    judge = load_reward("outcome_judge", generate=lambda prompts: ["Score: 1"] * len(prompts), scale=1)
    assert judge.name == "outcome_judge" and judge.form == "native_batched"
    assert judge([Sample(prompt="2+2?", completion="\\boxed{4}", ground_truth="4")]) == [1.0]
    # rewards knows no engines: a model is posttrain's option (posttrain.judge_engine), refused here by name
    with pytest.raises(RewardSpecError, match=r"'consistency_judge' does not take the options \['engine', 'model'\]; "
                                              r"it takes \['generate', 'scale', 'template'\]"):
        load_reward("consistency_judge", model="some/dir", engine="compact")
    with pytest.raises(TypeError, match="`generate` must be a callable"):
        ConsistencyJudge(generate="some/dir")
