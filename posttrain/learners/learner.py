"""`Learner`: one data-parallel rank of training, a DeepSpeed engine plus the loss, as a plain class.

It turns a `TrainBatch` (its rank's share) into one optimizer update: micro-batches (bucketed or packed, or with
`learner.shared_prefix` each group's prompt once before its completions: `shared_prefix.py`), a
forward under optional bf16 autocast over fp32 master weights (DeepSpeed's `torch_autocast`; the step's
`matmul_bits` says what the matmuls ran in), the registered loss with whole-batch
denominators, one backward per micro-batch, one DeepSpeed `step()`. `learner_group.py` runs N of these as Ray
actors in one process group; used alone (tests, single-process stages) it forms a group of one.

With `learner.lora` the model is wrapped in peft's adapters before DeepSpeed (the optimizer holds only them) and
every weight that leaves the learner (syncs, checkpoints' model/, the published model) is the merged one
(`lora.py`).

Boundary: the learner knows nothing of prompts, rewards or advantages' origin; it trains on token tensors.
Collectives: `train_step`, `forward_logprobs`, `save`, `load` and (under ZeRO-3) the weight exports
(`export_weights`, `stream_weights`, `broadcast_weights`, `write_shared_weights`) must be
called on every rank together. The learner's own reductions (batch totals, stats) run on its device
(`engine_setup.all_reduce`), so they work under NCCL as under gloo.

Bad input: a batch that fails `TrainBatch.validate`, or with no loss tokens on any rank, raises ValueError. A
non-finite loss on any rank skips the update on all ranks (gradients discarded, scheduler not advanced), saves
the rank's batch under `nan_batch_dir` and reports `skipped=1`; `max_consecutive_skips` in a row raises.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from posttrain.learners import engine_setup, lora
from posttrain.learners.batch import TrainBatch, VisionLayout
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.micro_batches import Layout, MicroBatch, build_micro_batches
from posttrain.learners.shared_prefix import build_shared_micro_batches, token_logprobs
from posttrain.losses import BatchTotals, LossInputs, build_loss
from rollout.shared_weights import SharedWeightsLayout, private_weights_path, write_slot
from rollout.weight_sync import BroadcastGroup, Plan, TensorMeta


class Learner:
    def __init__(self, config: LearnerConfig, model: nn.Module | None = None, reference: nn.Module | None = None,
                 device: torch.device | None = None):
        """`device`: the learner group passes the GPU the actor reserved (or the CPU); alone, CUDA if present."""
        import deepspeed

        self.device = device or engine_setup.default_device()
        engine_setup.init_process_group(self.device)
        self.config = config
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.autocast = engine_setup.use_bf16_autocast(config)
        torch.manual_seed(config.seed)
        self.loss = build_loss(config.loss.name, **config.loss.args)
        if config.shared_prefix and self.loss.model_output != "logprobs":
            raise ValueError(f"learner.shared_prefix needs a loss on token log-probs; {config.loss.name!r} reads "
                             f"head scores, one per row")
        self.ds_config = engine_setup.deepspeed_config(config, self.world_size)
        model = model if model is not None else engine_setup.load_model(config, ds_config=self.ds_config)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if reference is None and self.loss.needs_reference and config.reference is not None:
            reference = self._load_reference(model)  # before any adapters: the reference is the plain model
        if config.lora is not None:
            model = lora.wrap(model, config.lora, config.model_class == "sequence_classification")
        engine_setup.freeze_groups(lora.base_model(model), config.freeze)  # original paths, adapters included
        self.lr_lambda = engine_setup.schedule(config)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model.to(self.device), model_parameters=engine_setup.parameter_groups(model, config.weight_decay),
            config=self.ds_config, lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, self.lr_lambda))
        self.engine.train()
        self.reference = self._wrap_reference(reference)
        self.model_config = getattr(self.module, "config", None)
        self.vision_layout = VisionLayout.from_config(self.model_config) if self.model_config else None
        self.frozen_lm_head = self._load_frozen_lm_head()
        self.step = 0  # applied updates
        self.skipped_steps = 0
        self._consecutive_skips = 0
        self._grad_norm: float | None = None
        if config.zero_stage == 0:  # stage 0: clip/measure after DeepSpeed's all-reduce, before the update
            self.engine.optimizer.register_step_pre_hook(self._clip_hook)
        self.matmul_dtype = self._watch_matmul_dtype()

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    def _load_reference(self, policy: nn.Module) -> nn.Module:
        """`reference: policy` reloads the starting weights (a copy if the policy was passed as a module)."""
        path = self.config.model if self.config.reference == "policy" else self.config.reference
        if path is None:
            return copy.deepcopy(policy)
        return engine_setup.load_model(self.config, path, ds_config=self.ds_config)

    def _wrap_reference(self, reference: nn.Module | None):
        if reference is None:  # without one, batches must bring ref_logprobs when the loss needs them
            return None
        reference.requires_grad_(False)
        reference.eval().to(self.device)
        if self.config.zero_stage == 3:  # partition the reference like the policy
            import deepspeed

            ref_config = {k: v for k, v in self.ds_config.items() if k not in ("optimizer",)}
            reference = deepspeed.initialize(model=reference, config=ref_config)[0]
            reference.eval()
        return reference

    def _watch_matmul_dtype(self) -> dict[str, torch.dtype]:
        """{"dtype": what the policy's output layer (every forward runs it; a vision tower may not run) computed in,
        at its last forward}: the step metric `matmul_bits` says whether "bf16" really ran in bf16 (an autocast
        switched off inside the engine is silent). A model without one (a score head) uses its first Linear."""
        seen: dict[str, torch.dtype] = {}
        output = getattr(self.module, "get_output_embeddings", lambda: None)()
        linear = output if isinstance(output, nn.Linear) else next(
            (m for m in self.module.modules() if isinstance(m, nn.Linear)), None)
        if linear is not None:
            linear.register_forward_hook(lambda module, args, out: seen.__setitem__("dtype", out.dtype))
        return seen

    def _clip_hook(self, optimizer, args, kwargs) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    # ------------------------------------------------------------------------------------------ forward
    def _positions(self, batch: TrainBatch) -> Tensor:
        """[P, B, L] positions of each real token: Keye's 3-D RoPE indices, else 0..n-1 per sequence."""
        module = self.module
        if hasattr(module, "rope_positions"):
            return module.rope_positions(batch.input_ids, batch.attention_mask, batch.image_grid_thw,
                                         batch.video_grid_thw, batch.second_per_grid_ts)[0]
        attn = batch.attention_mask.long()
        return ((attn.cumsum(-1) - 1).clamp(min=0) * attn).unsqueeze(0)

    def _layout(self, batch: TrainBatch) -> Layout:
        mode = self.config.micro_batching
        if self.loss.model_output == "scores" and mode in ("pack", "auto"):
            mode = "bucket"  # a classification head pools one token per row: rows must not be packed
        pad = getattr(self.model_config, "pad_token_id", None) or 0
        build = build_shared_micro_batches if self.config.shared_prefix else build_micro_batches
        return build(batch, self.config.grad_accum_steps, mode, self._positions(batch), self.vision_layout,
                     self.config.pack_length, pad)

    def _run_model(self, model, mb: MicroBatch):
        """The forward of the DeepSpeed engine (which opens its own bf16 autocast: `engine_setup.BF16_AUTOCAST`) or
        of the frozen reference model (a plain module: autocast opened here)."""
        position_ids = mb.position_ids if hasattr(self.module, "rope_positions") else mb.position_ids[0]
        vision = {k: v.to(self.device) for k, v in mb.vision.items() if v is not None}
        engine_autocasts = callable(getattr(model, "torch_autocast_enabled", None)) and model.torch_autocast_enabled()
        own_autocast = self.autocast and not engine_autocasts
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if own_autocast else nullcontext()
        with autocast:
            return model(input_ids=mb.input_ids.to(self.device), attention_mask=mb.attention_mask.to(self.device),
                         position_ids=position_ids.to(self.device), use_cache=False, **vision)

    def _token_outputs(self, model, mb: MicroBatch, entropy: bool,
                       entropy_grad: bool = False) -> tuple[Tensor, Tensor | None]:
        """Compact [n, l] log-probs of each token given its prefix (column 0: none, 0) and optional entropy
        (outside autograd unless a loss trains on it: a logged entropy would otherwise cost a second softmax's
        backward graph over the whole vocabulary)."""
        if mb.predecessor is not None:  # shared prefix: a completion's first token is scored by the prefix's end
            logits = self._run_model(model, mb).logits.float()  # [r, Lp, V]
            if self.config.temperature != 1.0:
                logits = logits / self.config.temperature
            return token_logprobs(logits, mb, entropy, entropy_grad)
        logits = self._run_model(model, mb).logits[:, :-1].float()  # [r, Lp-1, V]
        if self.config.temperature != 1.0:
            logits = logits / self.config.temperature
        logp, lse = self._gather_logprobs(logits, mb)
        ent = None
        if entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                ent_rows = lse - (torch.softmax(logits, -1) * logits).sum(-1)
                ent = mb.unpack(torch.nn.functional.pad(ent_rows, (1, 0)))
        return mb.unpack(logp), ent

    def _gather_logprobs(self, logits: Tensor, mb: MicroBatch) -> tuple[Tensor, Tensor]:
        """[r, Lp] log-probs of each token given its prefix (column 0: none, 0) from [r, Lp-1, V] logits, and
        the [r, Lp-1] log-normalisers."""
        ids = mb.input_ids[:, 1:].to(self.device).unsqueeze(-1)
        lse = torch.logsumexp(logits, dim=-1)
        return torch.nn.functional.pad(logits.gather(-1, ids).squeeze(-1) - lse, (1, 0)), lse

    def _scores(self, model, mb: MicroBatch) -> tuple[Tensor, Tensor | None]:
        """[r] head scores (bucket rows = samples) and, with a frozen LM head, the [r, L] next-token log-probs of
        the same forward: the hidden states the score head reads, through the starting policy's output layer."""
        if self.frozen_lm_head is None:
            return self._run_model(model, mb).logits.float()[:, 0], None
        seen = {}
        hook = self.module.score.register_forward_hook(lambda _module, args, _out: seen.update(hidden=args[0]))
        try:
            scores = self._run_model(model, mb).logits.float()[:, 0]
        finally:
            hook.remove()
        logits = seen["hidden"][:, :-1].float() @ self.frozen_lm_head.T  # [r, Lp-1, V]
        return scores, mb.unpack(self._gather_logprobs(logits, mb)[0])

    def _load_frozen_lm_head(self) -> Tensor | None:
        """The output layer a "scores" loss with token log-probs reads (the reward model's SFT term), not trained:
        written beside the starting model by `init_reward_model(frozen_lm_head=True)`."""
        from safetensors.torch import load_file

        from posttrain.reward_model_init import FROZEN_LM_HEAD

        if not self.loss.scores_with_logprobs:
            return None
        path = Path(self.config.model or ".", FROZEN_LM_HEAD)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: loss {self.loss.name!r} with an SFT term reads the starting "
                                    f"policy's output layer from it (the reward_model stage writes it; "
                                    f"posttrain.reward_model_init.init_reward_model(..., frozen_lm_head=True))")
        if not isinstance(lora.trained_module(getattr(self.module, "score", None)), nn.Linear):
            raise ValueError(f"loss {self.loss.name!r} with an SFT term needs a decoder classification model whose "
                             f"head is a Linear `score` (Qwen, Llama, Mistral...); {type(self.module).__name__} has "
                             f"none")
        return load_file(str(path))["weight"].to(self.device)

    @torch.no_grad()
    def forward_logprobs(self, batch: TrainBatch, reference: bool = False) -> Tensor:
        """[B, L] log p(token_t | tokens_<t) in the batch's layout (0 on padding and first tokens)."""
        batch.validate(self._vocab_size())
        model = self.reference if reference else self.engine
        if model is None:
            raise ValueError("forward_logprobs(reference=True) needs a reference model: set learner.reference")
        was_training = self.engine.training
        self.engine.eval()
        try:
            out = torch.zeros(batch.input_ids.numel(), dtype=torch.float32)
            for mb in self._layout(batch).micro_batches:
                logp = self._token_outputs(model, mb, entropy=False)[0].float().cpu()
                logp[:, 0] = 0.0
                out[mb.source[mb.valid]] = logp[mb.valid]
            return out.view_as(batch.input_ids.float())
        finally:
            self.engine.train(was_training)

    def _vocab_size(self) -> int | None:
        text = getattr(self.model_config, "text_config", self.model_config)
        return getattr(text, "vocab_size", None)

    # ------------------------------------------------------------------------------------------ training
    def _prepare(self, batch: TrainBatch) -> TrainBatch:
        batch.validate(self._vocab_size())
        if self.loss.needs_reference and batch.ref_logprobs is None:
            if self.reference is None:
                raise ValueError(f"loss {self.loss.name!r} needs ref_logprobs: set learner.reference ('policy' "
                                 f"or a model dir) or fill TrainBatch.ref_logprobs")
            batch = batch.with_fields(ref_logprobs=self.forward_logprobs(batch, reference=True))
        return batch

    def _loss_inputs(self, batch: TrainBatch, mb: MicroBatch, totals: BatchTotals) -> LossInputs:
        idx = mb.sample_index
        mask = mb.valid.float() if self.loss.mask_source == "tokens" else mb.take(batch.loss_mask.float())
        mask[:, 0] = 0.0  # nothing predicts a sequence's first token

        def pick(per_token: Tensor | None) -> Tensor | None:
            return mb.take(per_token.float()).to(self.device) if per_token is not None else None

        inputs = LossInputs(
            logprobs=torch.zeros(0), mask=mask.to(self.device), old_logprobs=pick(batch.old_logprobs),
            ref_logprobs=pick(batch.ref_logprobs),
            advantages=batch.advantages[idx].to(self.device) if batch.advantages is not None else None,
            chosen=batch.chosen[idx].bool().to(self.device) if batch.chosen is not None else None,
            group_ids=batch.group_ids[idx].to(self.device) if batch.group_ids is not None else None, totals=totals)
        if self.loss.model_output == "scores":
            inputs.scores, logprobs = self._scores(self.engine, mb)
            if logprobs is not None:
                inputs.logprobs = logprobs
        else:
            inputs.logprobs, inputs.entropy = self._token_outputs(self.engine, mb, self.loss.logs_entropy,
                                                                  self.loss.entropy_grad)
        return inputs

    def _global_totals(self, batch: TrainBatch) -> BatchTotals:
        mask = batch.attention_mask.float() if self.loss.mask_source == "tokens" else batch.loss_mask.float()
        mask = mask * (batch.attention_mask.long().cumsum(-1) > 1)  # drop each row's first token
        local = BatchTotals.of(mask, batch.chosen.bool() if batch.chosen is not None else None).as_tensor()
        summed = engine_setup.all_reduce(local, dist.ReduceOp.SUM, self.device)
        longest = engine_setup.all_reduce(local, dist.ReduceOp.MAX, self.device)
        summed[2] = longest[2]  # max_tokens is a max, not a sum
        totals = BatchTotals.from_tensor(summed)
        if totals.tokens == 0 and self.loss.model_output == "logprobs":
            raise ValueError("the batch has no trainable tokens on any rank (loss_mask is 0 everywhere after the "
                             "first token of each row); check the data stage's loss masks")
        return totals

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """One optimizer update on this rank's share of the batch; metrics are whole-batch (all ranks)."""
        start = time.perf_counter()
        batch = self._prepare(batch)
        totals = self._global_totals(batch)
        layout = self._layout(batch)
        lr = self.scheduler.get_last_lr()[0]
        stats: dict[str, float] = defaultdict(float)
        finite = True
        for mb in layout.micro_batches:
            out = self.loss(self._loss_inputs(batch, mb, totals))
            finite &= bool(torch.isfinite(out.loss))
            # Losses carry whole-batch denominators; DeepSpeed averages gradients over ranks, so undo that.
            self.engine.backward(out.loss * self.world_size, scale_wrt_gas=False)
            stats["loss"] += float(out.loss.detach())
            for key, value in out.stats.items():
                stats[key] += float(value)
        metrics = self._reduce_stats(stats, layout, finite)
        if metrics["skipped"]:
            metrics["grad_norm"] = float("nan")
            self._skip(batch)
        else:
            self._grad_norm = None
            self.engine.step()
            self.step += 1
            self._consecutive_skips = 0
            norm = self._grad_norm if self.config.zero_stage == 0 else self.engine.get_global_grad_norm()
            metrics["grad_norm"] = float(norm) if norm is not None else float("nan")
        elapsed = time.perf_counter() - start
        if "dtype" in self.matmul_dtype:
            metrics["matmul_bits"] = float(torch.finfo(self.matmul_dtype["dtype"]).bits)
        metrics.update(step=float(self.step), lr=float(lr), time_s=elapsed,
                       tokens_per_s=metrics["tokens"] / max(elapsed, 1e-9), loss_tokens=totals.tokens,
                       skipped_steps=float(self.skipped_steps))
        return metrics

    def _reduce_stats(self, stats: dict[str, float], layout: Layout, finite: bool) -> dict[str, float]:
        keys = sorted(stats)
        values = torch.tensor([stats[k] for k in keys] + [layout.real_tokens, layout.slot_tokens, float(not finite),
                                                          float(layout.packed)], dtype=torch.float64)
        values = engine_setup.all_reduce(values, dist.ReduceOp.SUM, self.device)
        metrics = dict(zip(keys, values[:len(keys)].tolist()))
        real, slots, bad, packed = values[len(keys):].tolist()
        metrics.update(tokens=real, padding_fraction=1.0 - real / max(slots, 1.0), skipped=float(bad > 0),
                       packed_fraction=packed / self.world_size)  # ranks whose micro-batches were packed
        return metrics

    def _skip(self, batch: TrainBatch) -> None:
        """Discard this update's gradients on every rank and keep the offending batch for inspection."""
        if self.config.zero_stage >= 2:
            self.engine.optimizer.finalize_gradient_accumulation_boundary()  # drain per-backward reductions
        if self.config.zero_stage > 0:
            self.engine.optimizer.zero_grad()
        else:
            self.engine.zero_grad()
        self.skipped_steps += 1
        self._consecutive_skips += 1
        root = Path(self.config.nan_batch_dir or Path(tempfile.gettempdir()) / "keye-posttrain-nan-batches")
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"step{self.step:07d}-skip{self.skipped_steps}-rank{self.rank}.pt"
        torch.save(batch.to_dict(), path)
        if self._consecutive_skips >= self.config.max_consecutive_skips:
            raise FloatingPointError(f"non-finite loss in {self._consecutive_skips} consecutive steps (batches saved "
                                     f"in {root}); lower the learning rate or inspect those batches")

    # ------------------------------------------------------------------------------------------ state
    def export_weights(self, bucket_bytes: int = 256 << 20, dtype: torch.dtype | None = None,
                       trainable_only: bool = False, rank0_only: bool = False) -> list[dict[str, Tensor]]:
        """Full CPU parameters in buckets of at most ~bucket_bytes (a larger tensor gets a bucket of its own).

        Under ZeRO-3 the parameters are gathered bucket by bucket, so every rank must call this;
        `rank0_only` returns [] on the other ranks (they still take part in the gathers).
        """
        from posttrain.learners.checkpoint import export_parameters

        return export_parameters(self, bucket_bytes, dtype, trainable_only, rank0_only)

    def stream_weights(self, bucket_bytes: int, dtype: torch.dtype | None = None) -> Iterator[dict[str, Tensor]]:
        """`export_weights(rank0_only=True)` one bucket at a time (rank 0 yields; under ZeRO-3 every rank must
        run it to the end, joining the gathers)."""
        from posttrain.learners.checkpoint import iter_parameters

        return iter_parameters(self, bucket_bytes, dtype, rank0_only=True)

    def weight_plan(self, bucket_bytes: int, dtype: torch.dtype | None = None) -> Plan:
        """What `broadcast_weights` will send, bucket by bucket: the receivers need it before the first bucket."""
        from posttrain.learners.checkpoint import chunk_specs

        return [[TensorMeta(*spec) for spec in chunk] for chunk in chunk_specs(self, bucket_bytes, dtype)]

    def broadcast_weights(self, group: BroadcastGroup | None, bucket_bytes: int,
                          dtype: torch.dtype | None = None) -> int:
        """Rank 0 sends each chunk of `weight_plan` through `group` (the rollout workers' broadcast group), cast to
        `dtype` on its own device; under ZeRO-3 the other ranks (group None) join each chunk's gather. Returns
        the bytes sent."""
        from posttrain.learners.checkpoint import gathered_chunks

        if self.config.zero_stage != 3 and self.rank != 0:
            return 0
        sent = 0
        for chunk in gathered_chunks(self, bucket_bytes):
            if self.rank == 0:
                sent += group.send_bucket([(n, p.detach().to(dtype or p.dtype)) for n, p in chunk])
        return sent

    def shared_weights_layout(self, root: str) -> SharedWeightsLayout:
        """Rank 0: plan and create the shared-memory file the rollout engines on this host will view, in a new
        private directory under root (e.g. /dev/shm): made here, on the host whose engines map it."""
        from posttrain.learners.checkpoint import full_parameter_specs

        return SharedWeightsLayout.plan(private_weights_path(root), full_parameter_specs(self)).create()

    def write_shared_weights(self, layout: SharedWeightsLayout, version: int) -> int:
        """Copy the parameters into version's slot (one copy, no pickling); every rank joins ZeRO-3's gathers."""
        from posttrain.learners.checkpoint import gathered_chunks

        if self.config.zero_stage != 3 and self.rank != 0:
            return 0
        written = 0
        for chunk in gathered_chunks(self, 64 << 20):
            written += write_slot(layout, version, chunk) if self.rank == 0 else 0
        return written

    def save(self, directory: str | Path, data_state: dict | None = None) -> Path:
        from posttrain.learners.checkpoint import save_checkpoint

        return save_checkpoint(self, Path(directory), data_state or {})

    def load(self, directory: str | Path) -> dict:
        """Restore model, optimizer, scheduler, RNG and step; returns the saved data state."""
        from posttrain.learners.checkpoint import load_checkpoint

        return load_checkpoint(self, Path(directory))
