"""SigLIP sigmoid contrastive loss for pre-training stage 0 (Zhai et al. 2023, "Sigmoid Loss for Language Image
Pre-Training", eq. 1 and Algorithm 1):

L = -(1/|B|) Σ_i Σ_j log σ( z_ij (t x_i·y_j + b) ),  z_ij = 1 if i == j else -1,
with x, y the L2-normalised image and text embeddings, t = exp(t') and b learnable (init t' = log 10, b = -10).

Boundary: this works on embeddings from a vision tower and a text tower; it is not a registered causal-LM loss,
because the learner's batches carry token sequences, not image-text pairs. A stage-0 trainer calls it directly.
Departure: none; the chunked multi-device variant of the paper (sec. 3.3) is plain all-gather here.
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
