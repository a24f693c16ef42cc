"""Teacher servers on a loopback Ray, supervised as reward-model servers are: a replica that dies mid-batch is
replaced and the step answered in full; a batch that kills its replacement too fails the step saying so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from posttrain import teacher_server
from posttrain.teacher_server import TeacherReplicas, TeacherServer


class DiesInTheFirstBatch(TeacherServer):
    """Kills its process in the first batch any replica of it is sent (a marker beside the model remembers it)."""

    def __init__(self, model_dir: str, *args):
        super().__init__(model_dir, *args)
        self.marker = Path(model_dir).parent / "teacher-died-once"  # the session's own directory

    def logprobs(self, pairs):
        if not self.marker.exists():
            self.marker.touch()
            os._exit(1)
        return super().logprobs(pairs)


class AlwaysDies(TeacherServer):
    def logprobs(self, pairs):
        os._exit(1)


PAIRS = [([21, 22, 23], [30 + k, 31]) for k in range(5)]


def test_a_replica_that_dies_mid_batch_is_replaced_and_the_batch_answered(cluster, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(teacher_server, "TeacherServer", DiesInTheFirstBatch)
    teachers = TeacherReplicas(str(tiny_model_dir), replicas=1, cpus_per_replica=0.5, batch_size=2)
    try:
        answers = teachers.logprobs(PAIRS)
        assert teachers.actors.replaced == 1
    finally:
        teachers.close()
    expected = TeacherServer(str(tiny_model_dir)).logprobs(PAIRS)
    assert len(answers) == len(expected) == 5
    for got, want in zip(answers, expected):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-5)


def test_a_batch_that_kills_two_replicas_fails_the_step_saying_so(cluster, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(teacher_server, "TeacherServer", AlwaysDies)
    teachers = TeacherReplicas(str(tiny_model_dir), replicas=1, cpus_per_replica=0.5, batch_size=8)
    try:
        with pytest.raises(RuntimeError, match=r"teacher .*: a replica scoring a batch died, the second time for this "
                                               r"batch"):
            teachers.logprobs(PAIRS)
    finally:
        teachers.close()
