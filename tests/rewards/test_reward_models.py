"""Model-based rewards: a tiny random Qwen3 sequence classifier as reward model, and the consistency judge."""

from __future__ import annotations

import pytest
import torch

from rewards import load_reward
from rewards.judge import ConsistencyJudge, hf_generate, parse_judge_score
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


def test_judge_runs_a_hugging_face_causal_lm(tiny_tokenizer):
    model = tiny_qwen3(tiny_tokenizer, "Qwen3ForCausalLM")
    generate = hf_generate(model, tiny_tokenizer, max_new_tokens=4)
    texts = generate(["Does 2+2=4 support 4?", "short"])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    judge = load_reward("consistency_judge", model=model, tokenizer=tiny_tokenizer, max_new_tokens=4)
    try:  # a random model rarely writes a score: either a score in [0, 1] or a recorded parse failure
        score = judge([SAMPLES[0]])[0]
        assert 0.0 <= score <= 1.0
    except ValueError as error:
        assert "no score" in str(error)
