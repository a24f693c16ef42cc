"""The stage-0 learner: one data-parallel rank training Keye's vision tower with the SigLIP towers
(`keye_vl.text_tower.KeyeSiglip`) under a DeepSpeed engine, plus its Ray shell and the driver-side group.

It is a sibling of `learner.Learner`, not a configuration of it, because its batches are image-caption pairs,
not token sequences, and its loss needs every rank's texts (`distributed_siglip_loss`). It reuses the rest:
process group, DeepSpeed config, parameter groups, LR schedule (`engine_setup`) and atomic checkpoints with RNG
and data state (`checkpoint.save_checkpoint`/`load_checkpoint`, which only need `engine`, `module`, `config`,
`rank`, `world_size`, `step`). A checkpoint's `model/` is the full Keye directory with the trained `visual.*`
and `model/siglip/` the towers (`KeyeSiglip.save_pretrained`).

Boundary: this rank sees image paths and caption strings for its share of a step; step order, shards and
evaluation metrics are the stage's (`posttrain/stages/siglip.py`). Collectives: `train_step`,
`retrieval_logits`, `save` and `load` must be called on every rank together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor

from posttrain.learners import engine_setup
from posttrain.learners.learner_config import LearnerConfig
from posttrain.learners.learner_group import LearnerActor, start_ranks


@dataclass
class PairBatch:
    """One rank's image-caption pairs: row i of `images` (paths) is described by row i of `captions`."""

    images: list[str]
    captions: list[str]


class SiglipLearner:
    def __init__(self, config: LearnerConfig, text_tower: dict | None = None, device: torch.device | None = None):
        """`config.model`: the Keye model directory to start from; `config.lr`/`total_steps`: the stage's."""
        import deepspeed

        from keye_vl.image_processing import KeyeImageProcessor
        from keye_vl.text_tower import KeyeSiglip
        from keye_vl.tokenizer import load_tokenizer

        if config.lora is not None:  # refused, not ignored: a recipe asking for adapters here would get none
            raise ValueError("learner.lora is for the policy and reward-model learners; the siglip stage trains its "
                             "towers in full: set lora in the learner sections of the stages that use it, not in "
                             "the recipe's top-level learner section")
        self.device = device or engine_setup.default_device()
        engine_setup.init_process_group(self.device)
        self.config = config
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(config.seed)  # the same towers on every rank
        self.tokenizer = load_tokenizer(config.model)
        self.image_processor = KeyeImageProcessor.from_pretrained(config.model)
        model = KeyeSiglip.from_model_dir(config.model, self.tokenizer, text_tower)
        self.ds_config = engine_setup.deepspeed_config(config, self.world_size)
        lr_lambda = engine_setup.schedule(config)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model.to(self.device), model_parameters=engine_setup.parameter_groups(model, config.weight_decay),
            config=self.ds_config, lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda))
        self.step, self.skipped_steps = 0, 0  # save_checkpoint records both; a non-finite loss raises instead
        self._grad_norm: float | None = None
        if config.zero_stage == 0:  # as Learner: DeepSpeed's stage 0 neither clips nor reports the norm
            self.engine.optimizer.register_step_pre_hook(self._clip_hook)

    @property
    def module(self):
        return self.engine.module

    def _clip_hook(self, optimizer, args, kwargs) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _inputs(self, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
        from keye_vl.text_tower import encode_texts

        images = [Image.open(path).convert("RGB") for path in batch.images]
        vision = self.image_processor.preprocess(images=images)
        ids = encode_texts(self.tokenizer, batch.captions, self.module.towers.text_length)
        return vision["pixel_values"].to(self.device), vision["image_grid_thw"].to(self.device), ids.to(self.device)

    def _embed(self, batch: PairBatch) -> tuple[Tensor, Tensor]:
        image, text = self.engine(*self._inputs(batch))  # bf16: DeepSpeed's torch_autocast (engine_setup)
        return image.float(), text.float()  # the loss in fp32 whatever the towers ran in

    def train_step(self, batch: PairBatch) -> dict[str, float]:
        """One update; `loss` is the whole batch's (all ranks' pairs, all ranks' negatives)."""
        from posttrain.losses.siglip import distributed_siglip_loss

        start = time.perf_counter()
        lr = self.scheduler.get_last_lr()[0]
        towers = self.module.towers
        share = distributed_siglip_loss(*self._embed(batch), towers.logit_scale, towers.logit_bias)
        loss = engine_setup.all_reduce(share.detach().reshape(1), dist.ReduceOp.SUM, self.device)
        if not torch.isfinite(loss).all():
            raise FloatingPointError(f"non-finite SigLIP loss at step {self.step}; lower the stage's lr "
                                     f"(now {self.config.lr})")
        self.engine.backward(share * self.world_size, scale_wrt_gas=False)  # the ranks' gradients are averaged
        self._grad_norm = None
        self.engine.step()
        self.step += 1
        norm = self._grad_norm if self.config.zero_stage == 0 else self.engine.get_global_grad_norm()
        elapsed = time.perf_counter() - start
        return {"loss": float(loss), "grad_norm": float(norm) if norm is not None else float("nan"),
                "lr": float(lr), "temperature": float(towers.logit_scale.detach().exp()),
                "bias": float(towers.logit_bias.detach()), "time_s": elapsed,
                "pairs_per_s": len(batch.images) * self.world_size / max(elapsed, 1e-9)}

    @torch.no_grad()
    def retrieval_logits(self, batch: PairBatch, chunk: int = 64) -> Tensor:
        """[N, N] logits t * cos(image i, caption j) + b of all N pairs (every rank passes the same N). Each rank
        embeds its slice; the slices are gathered, so every rank returns the whole matrix."""
        self.engine.eval()
        n = len(batch.images)
        mine = range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)
        parts = []
        for i in range(mine.start, mine.stop, chunk):
            j = min(i + chunk, mine.stop)
            parts.append(self._embed(PairBatch(batch.images[i:j], batch.captions[i:j])))
        image = torch.cat([p[0] for p in parts]).cpu() if parts else torch.zeros(0)
        text = torch.cat([p[1] for p in parts]).cpu() if parts else torch.zeros(0)
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, (image, text))
        self.engine.train()
        image = torch.cat([g[0] for g in gathered if g[0].numel()])
        text = torch.cat([g[1] for g in gathered if g[1].numel()])
        return self.module.towers.logits(image.to(self.device), text.to(self.device)).float().cpu()

    def save(self, directory: str | Path, data_state: dict | None = None) -> Path:
        from posttrain.learners.checkpoint import save_checkpoint

        return save_checkpoint(self, Path(directory), data_state or {})

    def load(self, directory: str | Path) -> dict:
        from posttrain.learners.checkpoint import load_checkpoint

        return load_checkpoint(self, Path(directory))


class SiglipActor(LearnerActor):
    """The Ray role: `LearnerActor`'s shell (threads, GPU reservation, address, save/load/shutdown) around a
    `SiglipLearner`."""

    def init(self, rank: int, world_size: int, master_addr: str, master_port: int, config: dict,
             text_tower: dict | None = None) -> bool:
        import os

        device = engine_setup.reserved_device(self.gpu_ids, torch.cuda.is_available(),
                                              os.environ.get("CUDA_VISIBLE_DEVICES"))
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=str(device.index or 0))
        self.learner = SiglipLearner(LearnerConfig.model_validate(config), text_tower, device)
        return True

    def retrieval_logits(self, batch: PairBatch) -> Tensor:
        return self.learner.retrieval_logits(batch)


class SiglipGroup:
    """Driver-side handle of N `SiglipActor` ranks: splits each step's pairs evenly, calls every rank."""

    def __init__(self, config: LearnerConfig, text_tower: dict | None, actor_options: list[dict], num_threads: int):
        self.world_size = len(actor_options)
        self.actors = start_ranks(actor_options, num_threads, (config.model_dump(mode="json"), text_tower),
                                  actor_class=SiglipActor)

    def shards(self, batch: PairBatch) -> list[PairBatch]:
        if len(batch.images) % self.world_size:
            raise ValueError(f"{len(batch.images)} pairs do not split evenly over {self.world_size} learner ranks")
        k = len(batch.images) // self.world_size
        return [PairBatch(batch.images[r * k:(r + 1) * k], batch.captions[r * k:(r + 1) * k])
                for r in range(self.world_size)]

    def train_step(self, batch: PairBatch) -> dict[str, float]:
        import ray

        return ray.get([a.train_step.remote(s) for a, s in zip(self.actors, self.shards(batch))])[0]

    def retrieval_logits(self, batch: PairBatch) -> Tensor:
        import ray

        return ray.get([a.retrieval_logits.remote(batch) for a in self.actors])[0]

    def save(self, directory: str, data_state: dict | None = None) -> str:
        import ray

        return ray.get([a.save.remote(str(directory), data_state) for a in self.actors])[0]

    def load(self, directory: str) -> dict:
        import ray

        return ray.get([a.load.remote(str(directory)) for a in self.actors])[0]

    def shutdown(self) -> None:
        import ray

        try:
            ray.get([a.shutdown.remote() for a in self.actors])
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []
