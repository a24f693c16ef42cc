"""The `preference` stage: MPO (or another pair loss) on `<data>/pairs.jsonl`, Keye-VL's alignment step.

A row is `{"messages": [...prompt turns...], "mode": optional, "chosen": text, "rejected": text}`; a
`rejection_sample` stage writes such rows, and users can bring their own. Both answers are encoded exactly as
SFT rows are (`sft_data.encode_sft_row`), so they are the token sequences the model would sample, and sit next
to each other in the batch as one group (chosen first). The reference is a frozen copy of the starting model.
"""

from __future__ import annotations

import torch

from posttrain.data_files import read_jsonl
from posttrain.losses import build_loss
from posttrain.sft_data import SftExample, encode_sft_row, sft_batch
from posttrain.stages.common import learner_config
from posttrain.stages.context import StageContext
from posttrain.stages.sft import train_in_batches
from rollout.encoding import PromptEncoder


def load_pairs(ctx: StageContext, encoder: PromptEncoder) -> list[tuple[SftExample, SftExample]]:
    path = ctx.data_file("pairs.jsonl")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: a preference stage trains on pairs.jsonl (rows with messages, "
                                f"chosen, rejected); put a rejection_sample stage before it or provide the file")
    pairs = []
    for i, row in enumerate(read_jsonl(path, required=("messages", "chosen", "rejected"))):
        where = f"{path}:{i + 1}"
        if row["chosen"] == row["rejected"]:
            raise ValueError(f"{where}: chosen and rejected are the same text; a pair must differ")
        pairs.append(tuple(encode_sft_row({"messages": [*row["messages"], {"role": "assistant", "content": answer}],
                                           "mode": row.get("mode")}, encoder, where)
                           for answer in (row["chosen"], row["rejected"])))
    if not pairs:
        raise ValueError(f"{path} has no pairs")
    return pairs


def pair_batch(pairs: list[tuple[SftExample, SftExample]], pad_id: int):
    """Rows 2k (chosen) and 2k+1 (rejected) form group k."""
    batch = sft_batch([example for pair in pairs for example in pair], pad_id)
    chosen = torch.tensor([True, False] * len(pairs))
    return batch.with_fields(chosen=chosen, group_ids=torch.arange(len(pairs)).repeat_interleave(2))


def run_preference(ctx: StageContext) -> dict:
    loss = learner_config(ctx).loss
    needs = set(build_loss(loss.name, **loss.args).needs)
    if "chosen" not in needs or not needs <= {"chosen", "group_ids", "ref_logprobs"}:
        raise ValueError(f"stage {ctx.label}: learner.loss {loss.name!r} does not train on preference pairs; "
                         f"use mpo, dpo or bco_pair")
    encoder = PromptEncoder.from_model_dir(ctx.model_in)
    pairs = load_pairs(ctx, encoder)
    summary = train_in_batches(ctx, len(pairs), lambda rows: pair_batch([pairs[i] for i in rows], encoder.pad_id),
                               reference=ctx.recipe.stage_learner(ctx.stage).reference or "policy")
    return {**summary, "pairs": len(pairs)}
