"""LoRA adapters for a learner (`learner.lora`), through peft: wrapping the model, the merged view the rollout
engines and the published model get, and the adapter's own files.

`wrap` injects peft's LoRA layers into the named Linear projections (a target matching no Linear is refused,
naming the ones that exist) and leaves only the adapters trainable; a sequence-classification model also trains
its score head (peft's SEQ_CLS `modules_to_save`), without which a reward model could not learn to score.
`engine_weights` is the one view of a model's weights that leaves the learner (weight sync, published model):
each target's weight is W + scale * B @ A, computed by peft's own `get_delta_weight` on each export without
touching the training model (no merge/unmerge), under the base model's own names (no `base_model.model.`
prefix, no lora_A/B tensors), so an engine built from the base model loads it as it loads a full-weight update.
A model without adapters is viewed as its own parameters.

Boundary: knows nothing of DeepSpeed, ZeRO partitions or collectives (the caller gathers `EngineWeight.sources`
before calling `value()`), nor of checkpoints' layout; only of peft's module structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from posttrain.learners.learner_config import LoraConfig

ADAPTER = "default"  # peft's name for the one adapter a learner trains


def _linear_paths(model: nn.Module) -> list[str]:
    return [path for path, module in model.named_modules() if isinstance(module, nn.Linear)]


def check_targets(model: nn.Module, targets: list[str]) -> None:
    """Every target must name (as peft matches: the last dotted parts of a module path) at least one Linear."""
    paths = _linear_paths(model)
    missing = [t for t in targets if not any(p == t or p.endswith("." + t) for p in paths)]
    if missing:
        names = sorted({p.rsplit(".", 1)[-1] for p in paths})
        raise ValueError(f"learner.lora.target_modules {missing} match no Linear module of "
                         f"{type(model).__name__}; its Linear modules are named {names}")


def wrap(model: nn.Module, config: LoraConfig, sequence_classification: bool) -> nn.Module:
    """The peft model (wraps `model` in place): adapters trainable, every other parameter frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    check_targets(model, config.target_modules)
    peft_config = PeftLoraConfig(r=config.r, lora_alpha=config.alpha if config.alpha is not None else config.r,
                                 lora_dropout=config.dropout, target_modules=list(config.target_modules),
                                 bias="none", task_type="SEQ_CLS" if sequence_classification else None)
    return get_peft_model(model, peft_config)


def is_lora(module: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(module, PeftModel)


def base_model(module: nn.Module) -> nn.Module:
    """The wrapped model itself (its module paths are the original ones, adapters injected): what
    `learner.freeze` patterns and `save_pretrained` of the merged weights apply to."""
    return module.get_base_model() if is_lora(module) else module


def trained_module(module: nn.Module | None) -> nn.Module | None:
    """The copy of a saved module (a LoRA reward model's score head) that trains; any other module itself."""
    from peft.utils.other import ModulesToSaveWrapper

    return module.modules_to_save[ADAPTER] if isinstance(module, ModulesToSaveWrapper) else module


@dataclass(frozen=True)
class EngineWeight:
    """One tensor the engines receive: `name` in the base model's naming, computed from `sources` (the weight
    itself, or a target's base weight, lora_A and lora_B); `layer` is the peft layer when merged."""

    name: str
    sources: tuple[nn.Parameter, ...]
    layer: nn.Module | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        weight = self.sources[0]  # a ZeRO-3 partition keeps its full shape in ds_shape
        return tuple(getattr(weight, "ds_shape", weight.shape))

    @property
    def dtype(self) -> torch.dtype:
        return self.sources[0].dtype

    @property
    def nbytes(self) -> int:
        return int(torch.Size(self.shape).numel()) * self.sources[0].element_size()

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.sources)

    def value(self) -> Tensor:
        """The full tensor (sources must be whole: gathered under ZeRO-3); a new tensor when merged."""
        with torch.no_grad():
            weight = self.sources[0].detach()
            if self.layer is None:
                return weight
            return weight + self.layer.get_delta_weight(ADAPTER).to(weight.dtype)


def engine_weights(module: nn.Module) -> list[EngineWeight]:
    """The weights as a model without adapters names them, in `named_parameters` order (shared ones once)."""
    if not is_lora(module):
        return [EngineWeight(name, (param,)) for name, param in module.named_parameters()]
    out: list[EngineWeight] = []
    _walk(module.get_base_model(), "", set(), out)
    return out


def _walk(module: nn.Module, prefix: str, seen: set[int], out: list[EngineWeight]) -> None:
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    join = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    if isinstance(module, LoraLayer):
        if not isinstance(module, LoraLinear):  # check_targets admits Linear targets only
            raise TypeError(f"{prefix}: LoRA on {type(module).__name__} is not supported, only on Linear")
        base = module.get_base_layer()
        out.append(EngineWeight(join("weight"), (base.weight, module.lora_A[ADAPTER].weight,
                                                 module.lora_B[ADAPTER].weight), module))
        if base.bias is not None:
            out.append(EngineWeight(join("bias"), (base.bias,)))
        return
    if isinstance(module, ModulesToSaveWrapper):  # the trained copy of the score head, under the head's name
        _walk(module.modules_to_save[ADAPTER], prefix, seen, out)
        return
    for name, param in module._parameters.items():
        if param is not None and id(param) not in seen:
            seen.add(id(param))
            out.append(EngineWeight(join(name), (param,)))
    for name, child in module._modules.items():
        if child is not None:
            _walk(child, join(name), seen, out)


def plain_name(name: str) -> str | None:
    """A base-model path with peft's wrappers removed (`q_proj.base_layer.x` -> `q_proj.x`); None for the adapter's
    own tensors and the untrained copy of a saved module, which a plain model has no place for."""
    parts = name.split(".")
    if any(p.startswith("lora_") or p == "original_module" for p in parts):
        return None
    out, i = [], 0
    while i < len(parts):
        if parts[i] == "base_layer":
            i += 1
        elif parts[i] == "modules_to_save" and i + 1 < len(parts):
            i += 2  # modules_to_save.<adapter>
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def adapter_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The adapter's tensors (peft names): lora_A/B of every target and the trained copies of saved modules,
    frozen ones included (an adapter file must be whole)."""
    return [(n, p) for n, p in module.named_parameters() if ".lora_" in n or ".modules_to_save." in n]


def save_adapter(module: nn.Module, out: Path, state: dict[str, Tensor]) -> None:
    """peft's adapter directory (adapter_config.json + adapter_model.safetensors) from `state`, the whole
    `adapter_parameters` (the caller gathers them)."""
    module.save_pretrained(str(out), state_dict=state)
