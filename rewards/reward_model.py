"""Reward-model reward: a Hugging Face sequence-classification model scores (prompt, completion), batched.

The conversation is the prompt messages plus the completion as the assistant turn, rendered with the
tokenizer's chat template when it has one (third-party reward models were trained on theirs), else with
Keye's markup (`keye_protocol.chat.render_chat`). Image items become the vision placeholder text: the reward
model reads text only. The score is the logit of `label_index` (default: the single label of a regression
head). `device` puts the model where its server was given a GPU (`rewards.model_server`); "cpu" otherwise. This
module knows nothing about training the reward model (that is `posttrain`'s RM algorithm) or about serving it.
"""

from __future__ import annotations

from typing import Any

from keye_protocol.chat import render_chat
from rewards.registry import reward
from rewards.sample import Sample


def _messages(sample: Sample) -> list[dict]:
    return list(sample.prompt) + [{"role": "assistant", "content": sample.completion}]


def conversation_text(tokenizer: Any, messages: list[dict]) -> str:
    """The text a reward model reads for a conversation ending in the answer: the same for training
    (`posttrain/stages/reward_model.py`) and scoring, so a trained model is served the text it learned from."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return render_chat(messages, add_generation_prompt=False)


@reward("reward_model", factory=True, batched=True)
class RewardModelScorer:
    """`RewardModelScorer(model, tokenizer)(samples) -> list[float]`; model/tokenizer are objects or paths.

    >>> RewardModelScorer.__reward_batched__
    True
    """

    def __init__(self, model: Any, tokenizer: Any = None, batch_size: int = 8, max_length: int = 4096,
                 label_index: int | None = None, threads: int | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if isinstance(model, str):
            tokenizer = tokenizer or model
            model = AutoModelForSequenceClassification.from_pretrained(model)
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if tokenizer is None:
            raise ValueError("reward_model: pass `tokenizer` (object or path) when `model` is a loaded model")
        if label_index is None and model.config.num_labels != 1:
            raise ValueError(f"reward_model: the model has {model.config.num_labels} labels; set `label_index` "
                             f"to the one that scores quality (or use a 1-label regression head)")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # the head pools at the last non-pad token
        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.device = model.to(device).eval(), tokenizer, device
        self.batch_size, self.max_length = batch_size, max_length
        self.label_index = label_index or 0

    def text(self, sample: Sample) -> str:
        return conversation_text(self.tokenizer, _messages(sample))

    def __call__(self, samples: list[Sample]) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(samples), self.batch_size):
            texts = [self.text(s) for s in samples[start:start + self.batch_size]]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                   max_length=self.max_length).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits  # [B, num_labels]
            scores.extend(logits[:, self.label_index].float().tolist())
        return scores


RewardModelScorer.__reward_batched__ = True  # instances inherit it: the adapter calls them with a batch
