"""Held-out evaluation of a pre-training stage's model, per task: answer accuracy and target loss.

Accuracy: the model answers each held-out row greedily (no chat mode: pre-training data has none) and the
answer is checked by the row's verifier kind (`cold_start_data.verify.answer_correct`: exact count, matched
IoU >= 0.5 for boxes, normalised text); captions have no single right answer and are scored by loss only.
Loss: the mean negative log-likelihood per target token of the reference answer (teacher-forced), what
stage 1 lowers. Both come with their size; accuracies with a 95% Wilson interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cold_start_data.verify import answer_correct
from keye_protocol.chat import Mode
from posttrain.evaluation import wilson_interval
from posttrain.learners.batch import VISION
from posttrain.sft_data import encode_sft_row, sft_batch
from rewards.sample import Sample
from rollout.hf_engine import TransformersEngine
from rollout.types import GenerationRequest, SamplingParams

ANSWER_TOKENS = 48  # the longest target (a caption of four shapes) is about 40 tokens


@dataclass
class TaskScore:
    task: str
    n: int
    loss: float  # mean NLL per target token
    correct: int | None = None  # None: scored by loss only (captions)

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / self.n

    def describe(self) -> str:
        if self.correct is None:
            return f"{self.task} loss {self.loss:.3f} (n={self.n})"
        low, high = wilson_interval(self.correct, self.n)
        return (f"{self.task} {100 * self.accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}] "
                f"loss {self.loss:.3f} (n={self.n})")

    def summary(self) -> dict:
        out = asdict(self)
        if self.correct is not None:
            out.update(accuracy=self.accuracy, interval=list(wilson_interval(self.correct, self.n)))
        return out


def evaluate_tasks(model_dir: str | Path, rows_by_task: dict[str, list[dict]], batch_size: int = 64) -> dict:
    """task -> TaskScore for a model directory on held-out shard rows."""
    engine = TransformersEngine.from_pretrained(model_dir, max_batch_size=batch_size)
    return {task: TaskScore(task, len(rows), target_loss(engine, rows, batch_size), correct_answers(engine, rows))
            for task, rows in rows_by_task.items() if rows}


def target_loss(engine: TransformersEngine, rows: list[dict], batch_size: int) -> float:
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        examples = [encode_sft_row(r, engine.encoder, r.get("id", "")) for r in rows[start:start + batch_size]]
        batch = sft_batch(examples, engine.encoder.pad_id)
        vision = {k: v for k, v in batch.to_dict().items() if k in VISION and v is not None}
        with torch.no_grad():
            logits = engine.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **vision).logits
        mask = batch.loss_mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1][mask].float(), batch.input_ids[:, 1:][mask],
                                                reduction="sum")
        total, tokens = total + float(nll), tokens + int(mask.sum())
    return total / max(tokens, 1)


def correct_answers(engine: TransformersEngine, rows: list[dict]) -> int | None:
    kinds = {r["kind"] for r in rows}
    if kinds == {"caption"}:
        return None
    requests = [GenerationRequest(str(i), r["messages"][:-1]) for i, r in enumerate(rows)]
    completions = engine.generate(requests, SamplingParams(temperature=0.0, max_tokens=ANSWER_TOKENS))
    correct = 0
    for row, completion in zip(rows, completions):
        sample = Sample(prompt=row["messages"][:-1], completion=completion.text, mode=Mode.NO_THINK,
                        ground_truth=row["answer"])
        correct += completion.finish_reason != "error" and answer_correct(row["kind"], sample)
    return correct
