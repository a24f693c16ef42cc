"""The `reward_model` stage: a Bradley-Terry reward model trained on preference pairs, beside the policy.

Pairs come from the newest `pairs.jsonl` (what `rejection_sample` writes: `messages`, `chosen`, `rejected`) or
from the stage's `pairs` file in TRL's preference format (`prompt` as text or messages, `chosen` and `rejected`
as text or assistant messages), JSONL, Parquet or a `datasets` directory (`posttrain.data_files`). A seeded
`eval_fraction` of the prompts is held out, with all their pairs, unless `eval_pairs` names a held-out file. The model starts from the stage's input policy
or `base` (`posttrain.reward_model_init`: a 1-label sequence-classification head, zero at the start) and reads each
answer as the `reward_model` reward will serve it (`rewards.reward_model.conversation_text`). With the loss's
`sft_weight` the decoder also keeps learning to write the chosen conversations, read through the starting
policy's output layer, frozen (`posttrain/losses/reward_model.py`): on small preference sets that term is what
keeps a reward model from losing the task knowledge it is meant to judge with.

It writes `<stage>/reward_model/` (what `{spec: reward_model, options: {model: "stage:<name>"}}` loads) and
leaves the policy as it was: the next stage trains the model this one started from. The held-out evaluation
scores every answer through the serving path itself (`RewardModelScorer`): pairwise accuracy, mean margin, and
the AUC of chosen against rejected scores across pairs (how well one score separates good answers from bad).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from posttrain.stages.context import StageContext
from posttrain.stages.sft import train_in_batches

OUTPUT = "reward_model"


def load_preference_pairs(path: Path, columns: dict[str, str] | None = None) -> list[dict]:
    """Rows `{"messages": prompt turns, "chosen": text, "rejected": text}` from either pair format, with the
    row's `mode` (think, no_think...) where it has one."""
    from posttrain.data_files import read_rows

    pairs = []
    for index, row in enumerate(read_rows(path, columns), start=1):
        where = f"{path} row {index}"
        prompt = row.get("messages", row.get("prompt"))
        missing = [k for k, v in (("prompt", prompt), ("chosen", row.get("chosen")),
                                  ("rejected", row.get("rejected"))) if v is None]
        if missing:
            raise ValueError(f"{where}: a pair needs prompt (or messages), chosen and rejected; lacks {missing} "
                             f"(has {sorted(row)}); map your columns with the stage's `columns`")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        chosen, rejected = _answer_text(row["chosen"], where), _answer_text(row["rejected"], where)
        if chosen == rejected:
            raise ValueError(f"{where}: chosen and rejected are the same text; a pair must differ")
        pairs.append({"messages": messages, "chosen": chosen, "rejected": rejected,
                      **({"mode": row["mode"]} if row.get("mode") else {})})
    if not pairs:
        raise ValueError(f"{path} has no pairs")
    return pairs


def _answer_text(answer, where: str) -> str:
    """An answer as text: TRL's conversational rows give the assistant turn(s) as messages."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, list) and answer and all(isinstance(m, dict) and m.get("role") == "assistant"
                                                   for m in answer):
        return "".join(m["content"] if isinstance(m["content"], str) else
                       "".join(i.get("text", "") for i in m["content"]) for m in answer)
    raise ValueError(f"{where}: chosen/rejected must be text or a list of assistant messages, got {answer!r:.80}")


def split_pairs(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded `eval_fraction` of the prompts is held out with all its pairs, so that no
    held-out answer was trained on beside another answer to the same prompt (`pairs: all` gives a prompt many
    pairs); with one pair per prompt this is a split of the pairs."""
    groups: dict[str, list[dict]] = {}
    for pair in pairs:
        groups.setdefault(json.dumps(pair["messages"], sort_keys=True, default=str), []).append(pair)
    prompts = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(prompts))
    n_eval = int(round(eval_fraction * len(prompts)))
    if eval_fraction > 0 and n_eval == 0 or n_eval >= len(prompts):
        raise ValueError(f"{len(pairs)} pairs of {len(prompts)} prompts cannot be split with eval_fraction "
                         f"{eval_fraction}: give more pairs or another fraction")
    return ([p for i in order[n_eval:] for p in prompts[i]], [p for i in order[:n_eval] for p in prompts[i]])


def train_and_held_out(stage, path: Path, seed: int) -> tuple[list[dict], list[dict]]:
    """The stage's (train, held-out) pairs: its `eval_pairs` file when it names one, else a split of `path`."""
    pairs = load_preference_pairs(path, stage.columns)
    if stage.eval_pairs:
        return pairs, load_preference_pairs(Path(stage.eval_pairs), stage.columns)
    return split_pairs(pairs, stage.eval_fraction, seed)


def pair_batch(pairs: list[dict], tokenizer, max_length: int):
    """Rows 2k (chosen) and 2k+1 (rejected) form group k; right padding, the head pools the last real token. The
    loss mask covers the answer (what the loss's SFT term trains on): the tokens after the rendered prompt."""
    from posttrain.learners.batch import TrainBatch
    from rewards.reward_model import conversation_text

    texts = [conversation_text(tokenizer, [*p["messages"], {"role": "assistant", "content": p[side]}])
             for p in pairs for side in ("chosen", "rejected")]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                        padding_side="right")
    mask = encoded["attention_mask"]
    loss_mask = mask.clone()
    for k, pair in enumerate(pairs):  # chosen and rejected share the prompt: render and count it once
        prompt = conversation_text(tokenizer, pair["messages"])
        length = len(tokenizer(prompt)["input_ids"])
        for row in (2 * k, 2 * k + 1):
            # chat templates render earlier turns the same whatever follows; where one does not, the whole
            # conversation counts as the answer
            if texts[row].startswith(prompt):
                loss_mask[row, :length] = 0
    return TrainBatch(input_ids=encoded["input_ids"], attention_mask=mask, loss_mask=loss_mask,
                      chosen=torch.tensor([True, False] * len(pairs)),
                      group_ids=torch.arange(len(pairs)).repeat_interleave(2))


def evaluate_pairs(model_dir: Path, pairs: list[dict], max_length: int) -> dict:
    """Held-out pairwise accuracy, mean margin and AUC, scored the way the `reward_model` reward serves."""
    from scipy.stats import mannwhitneyu

    from rewards.reward_model import RewardModelScorer
    from rewards.sample import Sample

    if not pairs:
        return {}
    scorer = RewardModelScorer(str(model_dir), max_length=max_length)
    samples = [Sample(prompt=p["messages"], completion=p[side]) for p in pairs for side in ("chosen", "rejected")]
    scores = np.array(scorer(samples))
    chosen, rejected = scores[0::2], scores[1::2]
    auc = mannwhitneyu(chosen, rejected).statistic / (len(chosen) * len(rejected))
    right = chosen > rejected
    modes = np.array([p.get("mode") or "" for p in pairs])
    by_mode = {mode: {"pairs": int((modes == mode).sum()), "accuracy": float(right[modes == mode].mean())}
               for mode in sorted(set(modes) - {""})}
    return {"pairs": len(pairs), "accuracy": float(right.mean()), "margin": float((chosen - rejected).mean()),
            "auc": float(auc), **({"by_mode": by_mode} if by_mode else {})}


def run_reward_model(ctx: StageContext) -> dict:
    from transformers import AutoTokenizer

    from posttrain.losses import build_loss
    from posttrain.reward_model_init import init_reward_model

    stage = ctx.stage
    path = Path(stage.pairs) if stage.pairs else ctx.data_file("pairs.jsonl")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: a reward_model stage trains on preference pairs; put a "
                                f"rejection_sample stage before it or set the stage's `pairs` file")
    train, held_out = train_and_held_out(stage, path, ctx.recipe.seed)
    start = ctx.dir / "init"
    if not (start / "config.json").exists():
        loss = ctx.recipe.stage_learner(stage).loss
        init_reward_model(stage.base or ctx.model_in, start,
                          frozen_lm_head=build_loss(loss.name, **loss.args).scores_with_logprobs)
    tokenizer = AutoTokenizer.from_pretrained(str(start))
    out = ctx.dir / OUTPUT
    before = evaluate_pairs(start, held_out, stage.max_length)
    summary = train_in_batches(ctx, len(train), lambda rows: pair_batch([train[i] for i in rows], tokenizer,
                                                                         stage.max_length),
                               publish_to=out, model=str(start), model_class="sequence_classification",
                               reference=None)
    after = evaluate_pairs(out, held_out, stage.max_length)
    (ctx.dir / "eval.json").write_text(json.dumps({"before": before, "after": after}, indent=2) + "\n")
    modes = "".join(f", {mode} {m['accuracy']:.1%}" for mode, m in after.get("by_mode", {}).items())
    shown = (f"held-out pairwise accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}{modes}, AUC "
             f"{after['auc']:.3f} ({len(held_out)} pairs)") if after else "no held-out pairs"
    return {**summary, "pairs": len(train), "held_out": after, "model": str(out),
            "headline": f"{summary['headline']}; {shown}"}
