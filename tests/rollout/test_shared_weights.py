"""Shared-memory weight sync: the learner writes a slot once, the engine's parameters become views of it."""

import errno
import os
import stat
import subprocess
import sys

import pytest
import torch

from rollout.hf_engine import TransformersEngine
from rollout.shared_weights import (ALIGN, PREFIX, SharedWeightsLayout, _pid_namespace, private_weights_path,
                                    slot_views, write_slot)
from rollout.types import GenerationRequest, SamplingParams

PROBE = [GenerationRequest("q", [{"role": "user", "content": "What is 3 + 4?"}], "think")]
GREEDY = SamplingParams(temperature=0, max_tokens=8)


def specs(model):
    return [(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()]


@pytest.fixture
def layout(tmp_path, tiny_model):
    layout = SharedWeightsLayout.plan(tmp_path / "weights", specs(tiny_model)).create()
    yield layout
    layout.remove()


def perturbed(model, scale: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return {n: p.detach() + scale * torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}


def test_every_entry_starts_on_a_cache_line_and_slots_hold_the_whole_model(tmp_path):
    layout = SharedWeightsLayout.plan(tmp_path / "w", [("a", (3,), torch.float32), ("b", (2, 5), torch.bfloat16),
                                                       ("c", (1,), torch.int64)])
    assert [e.offset for e in layout.entries] == [0, ALIGN, 2 * ALIGN]
    assert layout.slot_bytes == 3 * ALIGN
    layout.create()
    assert (tmp_path / "w").stat().st_size == 2 * 3 * ALIGN
    assert slot_views(layout, 1)["b"].dtype == torch.bfloat16 and slot_views(layout, 1)["b"].shape == (2, 5)


def test_written_slot_reads_back_and_the_other_slot_is_untouched(layout, tiny_model):
    first, second = perturbed(tiny_model, 0.1, 0), perturbed(tiny_model, 0.1, 1)
    written = write_slot(layout, 4, first.items())
    write_slot(layout, 5, second.items())
    assert written == sum(t.numel() * 4 for t in first.values())
    for name, view in slot_views(layout, 4).items():  # version 4: slot 0, not overwritten by version 5's slot 1
        assert torch.equal(view, first[name])
    for name, view in slot_views(layout, 7).items():  # version 7 shares version 5's slot
        assert torch.equal(view, second[name])


def test_the_engine_views_the_slot_and_generates_as_with_copied_weights(layout, tiny_model, tiny_model_dir):
    reference, shared = (TransformersEngine.from_pretrained(tiny_model_dir) for _ in range(2))
    weights = perturbed(tiny_model, 0.05, 2)
    write_slot(layout, 1, weights.items())
    assert shared.share_weights(1, slot_views(layout, 1)) == len(weights)
    reference.load_weights(1, weights)
    views = slot_views(layout, 1)
    for name, param in shared.model.named_parameters():  # no copy: the parameter is the shared memory itself
        assert param.data_ptr() == views[name].data_ptr()
    assert shared.weight_version == 1
    assert [c.token_ids for c in shared.generate(PROBE, GREEDY)] == \
        [c.token_ids for c in reference.generate(PROBE, GREEDY)]


def test_writing_the_next_version_leaves_the_engine_on_its_own_until_it_swaps(layout, tiny_model, tiny_model_dir):
    """The pipelined step writes version v+1 while the engine still generates with v."""
    engine = TransformersEngine.from_pretrained(tiny_model_dir)
    write_slot(layout, 2, perturbed(tiny_model, 0.05, 3).items())
    engine.share_weights(2, slot_views(layout, 2))
    probe = engine.encoder.text_ids("<|im_start|>user\nWhat is 1 + 1?<|im_end|>")
    before = engine.probe_logprobs(probe)
    write_slot(layout, 3, perturbed(tiny_model, 0.5, 4).items())
    assert torch.equal(engine.probe_logprobs(probe), before)
    engine.share_weights(3, slot_views(layout, 3))
    assert not torch.allclose(engine.probe_logprobs(probe), before)


def test_a_partial_or_mistyped_slot_is_refused(tmp_path, tiny_model, tiny_model_dir):
    engine = TransformersEngine.from_pretrained(tiny_model_dir)
    partial = SharedWeightsLayout.plan(tmp_path / "p", specs(tiny_model)[1:]).create()
    with pytest.raises(ValueError, match="no tensor for"):
        engine.share_weights(1, slot_views(partial, 1))
    halves = SharedWeightsLayout.plan(tmp_path / "h", [(n, s, torch.bfloat16) for n, s, _ in specs(tiny_model)])
    with pytest.raises(ValueError, match="object_store"):
        engine.share_weights(1, slot_views(halves.create(), 1))
    assert engine.weight_version == 0


def test_recreating_the_file_never_truncates_a_mapped_one(layout, tiny_model):
    """A resumed run creates its file anew; a mapping of the old one keeps its values (no SIGBUS)."""
    write_slot(layout, 0, perturbed(tiny_model, 0.1, 5).items())
    old = slot_views(layout, 0)
    name = next(iter(old))
    expected = old[name].clone()
    layout.remove()  # a path is only ever created new (O_EXCL)
    layout.create()
    assert torch.equal(old[name], expected)
    assert not slot_views(layout, 0)[name].any()  # the new file starts empty


def test_a_full_shared_memory_is_an_error_naming_the_size_and_the_fix(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    layout = SharedWeightsLayout.plan(tmp_path / "w", [("a", (1024, 1024), torch.float32)])
    with pytest.raises(OSError, match=r"cannot reserve 8 MiB in .* \(No space left on device\); enlarge it "
                                      r"\(docker: --shm-size\) or use rollout.weight_sync: object_store"):
        layout.create()
    assert not (tmp_path / "w").exists()


TINY = [("a", (4,), torch.float32)]


def test_the_file_is_private_in_a_new_directory_of_its_own(tmp_path):
    first, second = private_weights_path(tmp_path), private_weights_path(tmp_path)
    assert first.parent != second.parent and first.parent.parent == tmp_path
    assert first.parent.name.startswith(f"{PREFIX}{os.getpid()}-{_pid_namespace()}-")
    layout = SharedWeightsLayout.plan(first, TINY).create()
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    layout.remove()
    assert not first.parent.exists() and second.parent.exists()


def test_a_file_or_symlink_already_at_the_path_is_refused_never_reused(tmp_path):
    """Someone else's file there must not become the weights file, nor a symlink's target be truncated."""
    planted, target = tmp_path / "planted", tmp_path / "target"
    planted.write_bytes(b"x" * 64)
    target.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(target)
    for path in (planted, tmp_path / "link"):
        with pytest.raises(FileExistsError, match="already exists; the weights file is only ever created new"):
            SharedWeightsLayout.plan(path, TINY).create()
    assert planted.read_bytes() == b"x" * 64 and target.read_bytes() == b"keep"


def test_a_reader_refuses_a_symlink_or_another_users_file(tmp_path, monkeypatch):
    real = SharedWeightsLayout.plan(tmp_path / "real", TINY).create()  # not mapped yet: no cached mapping
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError) as refused:  # O_NOFOLLOW: ELOOP
        slot_views(SharedWeightsLayout.plan(tmp_path / "link", TINY), 0)
    assert refused.value.errno == errno.ELOOP
    monkeypatch.setattr(os, "getuid", lambda: os.stat(real.path).st_uid + 1)
    with pytest.raises(PermissionError, match=r"real is not a regular file of uid .*refusing to map it"):
        slot_views(real, 0)


def test_a_dead_process_directory_is_removed_at_the_next_start_a_live_one_kept(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    namespace = _pid_namespace()
    left = tmp_path / f"{PREFIX}{int(dead.stdout)}-{namespace}-abc"
    live = tmp_path / f"{PREFIX}{os.getpid()}-{namespace}-def"
    elsewhere = tmp_path / f"{PREFIX}{int(dead.stdout)}-1-ghi"  # another pid namespace: its pids are not ours
    for directory in (left, live, elsewhere):
        directory.mkdir(mode=0o700)
        (directory / "weights").write_bytes(b"w")
    private_weights_path(tmp_path)
    assert not left.exists() and live.exists() and elsewhere.exists()
    assert f"removed {left}, left by process {int(dead.stdout)} (gone)" in capsys.readouterr().err
