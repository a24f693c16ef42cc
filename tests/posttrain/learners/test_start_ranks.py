"""Starting learner ranks on a port another process took in the meantime: the ranks start again on a new one.

The port is found free and released before torch's store binds it (`LearnerActor.address`), so a second run on the
same node can take it in between; that happened in CI with two recipe runs side by side. Here rank 0 hands out a
port the test itself holds on the first attempt, and torch's own store fails on it."""

import socket

import pytest
import ray

from posttrain.learners.engine_setup import free_port
from posttrain.learners.learner_group import LearnerActor, start_ranks

pytestmark = pytest.mark.slow  # a Ray cluster and torch.distributed stores: ~10 s for the module


def actor_class(attempts_file, busy_port: int, init_error: str | None = None):
    class FirstPortTaken(LearnerActor):
        def address(self):
            with open(attempts_file, "a") as f:
                f.write("attempt\n")
            first = sum(1 for _ in open(attempts_file)) == 1
            return "127.0.0.1", busy_port if first else free_port()

        def init(self, rank, world_size, addr, port):
            import torch.distributed as dist

            if init_error:
                raise ValueError(init_error)
            dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size)
            return True

    return FirstPortTaken


@pytest.fixture()
def held_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_ranks_start_again_on_a_new_port_when_theirs_was_taken(cluster, tmp_path, held_port):
    attempts = tmp_path / "attempts"
    actors = start_ranks([{"num_cpus": 0.25}], 1, (), actor_class=actor_class(attempts, held_port))
    try:
        assert len(actors) == 1 and attempts.read_text().count("attempt") == 2
        ray.get(actors[0].shutdown.remote())  # a barrier: the process group was formed
    finally:
        ray.kill(actors[0])


def test_any_other_failure_is_raised_after_one_attempt(cluster, tmp_path, held_port):
    attempts = tmp_path / "attempts"
    with pytest.raises(ray.exceptions.RayTaskError, match="no such model"):
        start_ranks([{"num_cpus": 0.25}], 1, (), actor_class=actor_class(attempts, held_port, "no such model"))
    assert attempts.read_text().count("attempt") == 1
