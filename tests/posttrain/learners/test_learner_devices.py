"""A learner's device comes from the GPU Ray reserved for it; its reductions run on that device (NCCL needs CUDA
tensors), which on CPU is the gloo path checked here."""

import pytest
import torch
import torch.distributed as dist

from posttrain.learners.engine_setup import all_reduce, init_process_group, reserved_device


def test_the_device_is_the_reserved_gpu_and_never_another():
    assert reserved_device([], cuda_available=True, visible=None) == torch.device("cpu")  # reserved none: CPU
    assert reserved_device(["3"], True, "3") == torch.device("cuda", 0)  # Ray set CUDA_VISIBLE_DEVICES=3
    assert reserved_device(["5"], True, "4,5") == torch.device("cuda", 1)
    assert reserved_device(["2"], True, None) == torch.device("cuda", 2)  # Ray told not to set the variable
    with pytest.raises(RuntimeError, match=r"reserved GPU 3 but torch .* has no CUDA: install a CUDA build of "
                                           r"torch on the GPU nodes, or train on CPU with cluster.gpus_per_learner: 0"):
        reserved_device(["3"], cuda_available=False, visible="3")
    with pytest.raises(ValueError, match="a learner rank drives one GPU but was given 2"):
        reserved_device(["0", "1"], True, "0,1")
    with pytest.raises(RuntimeError, match="not among CUDA_VISIBLE_DEVICES"):
        reserved_device(["7"], True, "0,1")


def test_all_reduce_returns_a_cpu_copy_and_leaves_the_input_alone():
    init_process_group(torch.device("cpu"))  # a group of one (gloo), shared with the other learner tests
    values = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    summed = all_reduce(values, dist.ReduceOp.SUM, torch.device("cpu"))
    longest = all_reduce(values, dist.ReduceOp.MAX, torch.device("cpu"))
    assert summed.device.type == "cpu" and summed is not values
    assert summed.tolist() == [1.0, 2.0, 3.0] == longest.tolist() == values.tolist()
