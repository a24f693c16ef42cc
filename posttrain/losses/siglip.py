"""SigLIP sigmoid contrastive loss for pre-training stage 0 (Zhai et al. 2023, "Sigmoid Loss for Language Image
Pre-Training", eq. 1 and Algorithm 1):

L = -(1/|B|) Σ_i Σ_j log σ( z_ij (t x_i·y_j + b) ),  z_ij = 1 if i == j else -1,
with x, y the L2-normalised image and text embeddings, t = exp(t') and b learnable (init t' = log 10, b = -10).

Boundary: this works on embeddings from a vision tower and a text tower; it is not a registered causal-LM loss,
because the learner's batches carry token sequences, not image-text pairs. A stage-0 trainer calls it directly.

Across data-parallel ranks (`distributed_siglip_loss`) every rank scores its own images against the texts of
*all* ranks, gathered with the functional collective `all_gather_tensor_autograd`, whose backward sends each
rank the gradients other ranks computed for its texts. Departure: the paper's chunked variant (sec. 3.3, big_vision's and
open_clip's ring exchange) passes text blocks from neighbour to neighbour to hold one block at a time; a plain
all-gather holds all W blocks, [W*n, D] floats, which is small beside the towers at any batch this toolkit runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def siglip_loss(logits: Tensor) -> Tensor:
    """logits: [N, N] = t * x @ y.T + b (row i image, column j text) -> scalar loss.

    >>> round(float(siglip_loss(torch.tensor([[10.0, -10.0], [-10.0, 10.0]]))), 6)
    9.1e-05
    """
    labels = 2.0 * torch.eye(logits.shape[0], dtype=logits.dtype, device=logits.device) - 1.0  # [N, N]
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


class SigLIPLoss(nn.Module):
    """Holds the learnable temperature t' and bias b; train them with the towers."""

    def __init__(self, init_log_temperature: float = math.log(10.0), init_bias: float = -10.0):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(init_log_temperature))
        self.bias = nn.Parameter(torch.tensor(init_bias))

    def logits(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        # image_embeds, text_embeds: [N, D] -> [N, N]
        x, y = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
        return self.log_temperature.exp() * x @ y.T + self.bias

    def forward(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        return siglip_loss(self.logits(image_embeds, text_embeds))


def distributed_siglip_loss(image_embeds: Tensor, text_embeds: Tensor, log_temperature: Tensor, bias: Tensor,
                            group=None) -> Tensor:
    """This rank's share of the whole-batch loss: its n images against the W*n texts of all ranks.

    image_embeds, text_embeds: [n, D] this rank's pairs (row i of one matches row i of the other); every rank
    must hold the same n. The shares sum over ranks to `siglip_loss` of the whole batch (denominator W*n), so
    backward of `share * W` under the ranks' gradient averaging (DeepSpeed, DDP) gives the whole-batch gradient,
    the convention of the learner's losses. Without an initialised process group it is the one-rank loss.
    """
    import torch.distributed as dist

    world = dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank(group) if world > 1 else 0
    n = image_embeds.shape[0]
    if text_embeds.shape[0] != n:
        raise ValueError(f"{n} image embeddings but {text_embeds.shape[0]} text embeddings: pass pairs")
    texts = F.normalize(text_embeds, dim=-1)
    if world > 1:
        device = image_embeds.device  # NCCL gathers CUDA tensors only
        sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([n], device=device), group=group)
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(f"every rank needs the same number of pairs, got {[int(s) for s in sizes]}: make the "
                             f"batch size a multiple of the number of learner ranks")
        # The functional collective, not torch.distributed.nn's all_gather: that one's backward (an all_to_all run
        # by autograd) left gloo ranks aborting at exit ("terminate called without an active exception").
        from torch.distributed._functional_collectives import all_gather_tensor_autograd

        texts = all_gather_tensor_autograd(texts.contiguous(), 0, group or dist.group.WORLD)  # [W*n, D]
    logits = log_temperature.exp() * F.normalize(image_embeds, dim=-1) @ texts.T + bias  # [n, W*n]
    labels = -torch.ones_like(logits)
    labels[:, rank * n:(rank + 1) * n] += 2.0 * torch.eye(n, dtype=logits.dtype, device=logits.device)
    return -F.logsigmoid(labels * logits).sum() / (world * n)
