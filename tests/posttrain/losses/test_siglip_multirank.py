"""The multi-rank SigLIP loss: two gloo ranks, each holding half the pairs, give the loss and the gradients of
one rank holding all of them (every rank's texts are negatives of every rank's images)."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from posttrain.learners.engine_setup import free_port
from posttrain.losses.siglip import SigLIPLoss, distributed_siglip_loss, siglip_loss

PAIRS, FEATURES, DIM = 8, 6, 4


class Towers(nn.Module):
    """Two linear encoders plus t' and b: small, but the loss sees real parameters on both sides."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(FEATURES, DIM).double()
        self.text = nn.Linear(FEATURES, DIM).double()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0), dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))  # nearer 0 than -10: bigger gradients

    def loss(self, images, texts):
        return distributed_siglip_loss(self.image(images), self.text(texts), self.log_temperature, self.bias)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(PAIRS, FEATURES, generator=g, dtype=torch.float64), \
        torch.randn(PAIRS, FEATURES, generator=g, dtype=torch.float64)


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def rank_main(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = Towers()
        images, texts = (x.chunk(world)[rank] for x in batch())
        share = model.loss(images, texts)
        (share * world).backward()  # what the stage does: DeepSpeed then averages the gradients over ranks
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world
        total = share.detach().clone()
        dist.all_reduce(total)
        if rank == 0:
            torch.save({"loss": total, "grads": gradients(model)}, out)
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # Done and saved: leave without tearing gloo and the interpreter down. That teardown once aborted a rank in CI
    # after its work was over ("terminate called without an active exception", SIGABRT), failing a test whose
    # numbers were already right.
    os._exit(0)


def test_two_ranks_equal_one_rank_with_the_whole_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(rank_main, args=(2, free_port(), str(out)), nprocs=2, join=True)
    two = torch.load(out)

    model = Towers()  # one rank (no process group): the whole batch
    images, texts = batch()
    loss = model.loss(images, texts)
    loss.backward()
    reference = gradients(model)

    logits = model.log_temperature.exp() * nn.functional.normalize(model.image(images), dim=-1) @ \
        nn.functional.normalize(model.text(texts), dim=-1).T + model.bias
    assert loss.item() == pytest.approx(siglip_loss(logits).item(), abs=1e-12)  # one rank is the paper's loss
    assert float(two["loss"]) == pytest.approx(loss.item(), abs=1e-9)
    for name, grad in reference.items():
        assert torch.allclose(two["grads"][name], grad, atol=1e-9, rtol=0), name
    # Without the other rank's negatives each half sees a different loss: the equality above is not automatic.
    halves = [model.loss(i, t).item() for i, t in zip(images.chunk(2), texts.chunk(2))]
    assert abs(sum(halves) / 2 - loss.item()) > 1e-3


def test_initial_temperature_and_bias_are_siglips():
    loss = SigLIPLoss()
    assert float(loss.log_temperature) == pytest.approx(math.log(10.0))
    assert float(loss.bias) == -10.0


def test_unequal_pairs_are_refused():
    with pytest.raises(ValueError, match="pairs"):
        distributed_siglip_loss(torch.randn(3, 4), torch.randn(2, 4), torch.tensor(0.0), torch.tensor(0.0))
