"""The starting point of a trained reward model: a sequence-classification model with a fresh 1-label score head.

From any Hugging Face causal LM directory, transformers builds it (`AutoModelForSequenceClassification`, the
decoder's weights kept, the head new). A Keye-VL directory has no such class: its decoder is a Qwen3 stack whose
3-D RoPE reduces to plain RoPE on text (all three position axes are the token index), so the reward model is a
`Qwen3ForSequenceClassification` with Keye's text config and its `model.*` weights, the vision tower left out.
The reward model reads text only (`rewards/reward_model.py` turns image items into their placeholder text), which
is why this is the policy's own architecture for scoring. The head starts at zero: every answer scores 0.0 until
training moves it, so an untrained reward model adds nothing to a run's rewards.

With `frozen_lm_head=True` the source's output embedding is also written, as `FROZEN_LM_HEAD` beside the model
(not part of it: the published reward model is a plain sequence-classification model): the learner reads it when
the `bradley_terry` loss adds its SFT term on the chosen answers.
"""

from __future__ import annotations

from pathlib import Path

import torch

FROZEN_LM_HEAD = "frozen_lm_head.safetensors"  # {"weight": [vocab, hidden]}, the starting policy's output layer


def init_reward_model(source: str | Path, out: str | Path, frozen_lm_head: bool = False) -> str:
    """Write a 1-label sequence-classification model (and the tokenizer) built from `source` to `out`, and with
    `frozen_lm_head` the source's output embedding; returns the architecture written."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from keye_vl.configuration import KeyeVLConfig  # (importing keye_vl registers it with AutoConfig)

    source, out = Path(source), Path(out)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = AutoConfig.from_pretrained(str(source))
    model = _from_keye(source, config) if isinstance(config, KeyeVLConfig) \
        else AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
            tokenizer.eos_token_id  # the head pools at the last non-pad token
    with torch.no_grad():
        model.score.weight.zero_()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if frozen_lm_head:
        from safetensors.torch import save_file

        save_file({"weight": _output_embedding(source)}, str(out / FROZEN_LM_HEAD))
    return type(model).__name__


def _output_embedding(source: Path) -> torch.Tensor:
    """The causal LM's output layer from its safetensors: `lm_head.weight`, or the input embedding where the
    files hold none (tied weights are saved once, as the input embedding)."""
    from safetensors import safe_open

    for suffix in ("lm_head.weight", "embed_tokens.weight"):
        for file in sorted(source.glob("*.safetensors")):
            with safe_open(str(file), "pt") as weights:
                name = next((k for k in weights.keys() if k.endswith(suffix) and "visual" not in k), None)
                if name is not None:
                    return weights.get_tensor(name).float()
    raise ValueError(f"{source}: no lm_head.weight or embed_tokens.weight in its *.safetensors; the reward "
                     f"model's SFT term (bradley_terry sft_weight) reads the causal LM's output layer: start from "
                     f"a causal LM or set sft_weight: 0")


def _from_keye(source: Path, config):
    from safetensors.torch import load_file
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    text = config.text_config.to_dict()
    rope = {k: v for k, v in text.pop("rope_parameters", {}).items() if k != "mrope_section"}
    for key in ("model_type", "architectures", "transformers_version", "id2label", "label2id"):
        text.pop(key, None)
    model = Qwen3ForSequenceClassification(Qwen3Config(**text, rope_parameters=rope, num_labels=1))
    state = {}
    for file in sorted(source.glob("*.safetensors")):
        state.update({k: v for k, v in load_file(file).items() if k.startswith("model.")})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("score.")]:
        raise ValueError(f"{source}: the Keye decoder's weights do not fit a Qwen3 decoder (missing {missing}, "
                         f"unexpected {unexpected})")
    return model
