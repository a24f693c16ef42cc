"""Typed configuration of a learner (the recipe's `learner` section embeds `LearnerConfig`).

Unknown keys are rejected with the list of accepted ones, so a typo in a recipe fails at load time rather than
silently training with a default. The loss is named from the registry (`posttrain/losses`) and its arguments are
checked against that loss's constructor here, before any model is built.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

MODULE_GROUPS = ("visual", "mlp_AR", "model", "lm_head")


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "sft"  # a registered loss: sft, next_token, grpo, gspo, dpo, bco_pair, mpo, bradley_terry
    args: dict[str, Any] = Field(default_factory=dict)  # constructor arguments of that loss

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        from posttrain.losses import check_loss_args

        check_loss_args(self.name, self.args)
        return self


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfig(BaseModel):
    """Low-rank adapters (`posttrain/learners/lora.py`): only they train; the engines get the merged weights."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    r: int = Field(ge=1)  # rank of each update B @ A
    alpha: float | None = Field(None, gt=0)  # the update is scaled by alpha / r; None: alpha = r (scale 1)
    dropout: float = Field(0.0, ge=0, lt=1)  # on the adapter's input, in training forwards only
    # Linear modules adapted, matched as peft does (the last dotted parts of a module path): by default the
    # attention and MLP projections of Qwen/Llama-style decoders (a vision tower's same-named projections match too)
    target_modules: list[str] = Field(default_factory=lambda: list(LORA_TARGETS), min_length=1)

    @model_validator(mode="after")
    def _check(self) -> LoraConfig:
        if len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(f"lora.target_modules lists a module twice: {self.target_modules}")
        return self


class LearnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # model
    model: str | None = None  # Hugging Face model directory; None when the caller passes a module
    model_class: Literal["causal_lm", "sequence_classification"] = "causal_lm"
    reference: str | None = None  # None: no reference; "policy": frozen copy of the initial policy; else a dir
    # modules kept fixed: top-level groups (visual, mlp_AR, model, lm_head), dotted paths or fnmatch patterns
    freeze: list[str] = Field(default_factory=list)
    lora: LoraConfig | None = None  # None: full fine-tuning; else only the adapters train (freeze applies to them)
    gradient_checkpointing: bool = False
    # loss
    loss: LossConfig = Field(default_factory=LossConfig)
    temperature: float = Field(1.0, gt=0)  # log-probs of logits / T, the sampler's temperature (as verl)
    # optimisation
    zero_stage: int = Field(0, ge=0, le=3)
    lr: float = Field(1e-5, ge=0)
    weight_decay: float = Field(0.0, ge=0)  # applied to matrices only, not to norms and biases
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = Field(1.0, ge=0)  # max global grad norm; 0 disables clipping
    grad_accum_steps: int = Field(1, ge=1)  # micro-batches per step on every rank
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    total_steps: int | None = Field(None, ge=1)  # needed by linear/cosine decay
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    # numerics and layout
    precision: Literal["auto", "fp32", "bf16-autocast"] = "auto"  # fp32 master weights either way
    # auto: per batch, pack when bucketing would leave over a quarter of the slots padding (micro_batches.py)
    micro_batching: Literal["none", "bucket", "pack", "auto"] = "auto"
    pack_length: int | None = Field(None, ge=1)  # packed row length; None: the batch's longest sequence
    # one sequence per group (group_ids): the common prompt once, then each completion (shared_prefix.py)
    shared_prefix: bool = False
    rank_balance: Literal["none", "flops"] = "flops"  # rows across data-parallel ranks (rank_balance.py)
    seed: int = 0
    # bad input
    nan_batch_dir: str | None = None  # where batches with a non-finite loss are saved; None: a temp dir
    max_consecutive_skips: int = Field(3, ge=1)  # then raise: the run has diverged
    deepspeed: dict[str, Any] = Field(default_factory=dict)  # extra DeepSpeed config keys, merged last

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> LearnerConfig:
        stage_sets_length = (info.context or {}).get("stage_sets_total_steps", False)  # recipes: steps/epochs
        if self.schedule != "constant" and self.total_steps is None and not stage_sets_length:
            raise ValueError(f"schedule {self.schedule!r} decays to total_steps: set learner.total_steps")
        if self.total_steps is not None and self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be < total_steps {self.total_steps}")
        if self.shared_prefix and self.model_class != "causal_lm":
            raise ValueError("shared_prefix needs model_class causal_lm: a classification head pools one token per "
                             "row, and shared-prefix rows hold several sequences")
        if len(set(self.freeze)) != len(self.freeze):
            raise ValueError(f"freeze lists a group twice: {self.freeze}")
        return self
