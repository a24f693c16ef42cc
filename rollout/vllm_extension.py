"""The worker side of a vLLM weight update: mixed into every vLLM worker through `worker_extension_cls`.

An update is a session, as vLLM's own weight-transfer engines run it: `posttrain_begin_update` puts the model in
vLLM's layer-wise reload state, each `posttrain_load_chunk` / `posttrain_load_file` call feeds checkpoint-format
tensors (Hugging Face names, any dtype: the model's weight loaders cast them), and `posttrain_finish_update`
restores every layer that received nothing and drops the encoder and multimodal caches. Inside a session vLLM
buffers a layer's tensors until all of them have arrived, then re-runs the layer's post-load processing (the
CPU build repacks weights; a plain `model.load_weights` fails there for want of the original weight loaders).
So a bucket boundary may split a fused module (q/k/v, gate/up) without harm, which a `reload_weights` call per
bucket would not survive: each such call finishes the session and leaves half-loaded fused layers garbage.

Knows nothing of versions, learners or transports beyond "an iterator in this process" (in-process mode) and
"a safetensors file on local disk" (multiprocess mode, where `collective_rpc` arguments are msgpack-encoded and
only control messages, such as a path, may cross).
"""

from __future__ import annotations

from typing import Iterable

import torch


class WeightUpdateExtension:
    """Methods vLLM adds to its worker class; `self` is the worker (`self.model_runner`, `self.vllm_config`)."""

    def posttrain_begin_update(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(self.model_runner.get_model())

    def posttrain_load_chunk(self, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
        """In-process mode only: `weights` is consumed lazily, one tensor at a time."""
        from vllm.config import set_current_vllm_config

        counted = _Counter(weights)
        with set_current_vllm_config(self.vllm_config):
            self.model_runner.get_model().load_weights(iter(counted))
        return counted.count

    def posttrain_load_file(self, path: str) -> int:
        """Multiprocess mode: load the tensors of a safetensors file the engine wrote (and deletes once every
        worker has read it)."""
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return self.posttrain_load_chunk((name, f.get_tensor(name)) for name in f.keys())

    def posttrain_reseed(self, seed: int) -> None:
        """Seed the generator vLLM's sampler draws unseeded requests from (CPU and every CUDA device)."""
        torch.manual_seed(seed)

    def posttrain_finish_update(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        runner = self.model_runner
        with set_current_vllm_config(self.vllm_config):
            finalize_layerwise_reload(runner.get_model(), self.vllm_config.model_config)
        runner.reset_encoder_cache()
        runner.reset_mm_cache()


class _Counter:
    """Passes (name, tensor) pairs through, counting them (the engine reports how many it loaded)."""

    def __init__(self, items):
        self.items, self.count = items, 0

    def __iter__(self):
        for item in self.items:
            self.count += 1
            yield item
