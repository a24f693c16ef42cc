"""A DeepSpeed build lock left by a kill is cleared before the build; a live build's lock is waited on, said once."""

import os
import threading
import time

from posttrain.learners.engine_setup import BUILD_LOCK_MAX_AGE_S, clear_stale_build_locks


def lock_in(root, age_s: float):
    lock = root / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.touch()
    os.utime(lock, (time.time() - age_s,) * 2)
    return lock


def test_a_lock_older_than_any_build_is_removed_with_a_warning_naming_it(tmp_path, capsys):
    lock = lock_in(tmp_path, BUILD_LOCK_MAX_AGE_S + 60)
    clear_stale_build_locks(tmp_path)  # returns: no wait on a dead build
    assert not lock.exists()
    assert f"warning: removed {lock}, a DeepSpeed op build lock 11 min old" in capsys.readouterr().err


def test_a_fresh_lock_is_left_alone_and_waited_on_saying_so_once(tmp_path, capsys):
    lock = lock_in(tmp_path, 5)
    guard = threading.Thread(target=clear_stale_build_locks, args=(tmp_path,), kwargs={"poll_s": 0.01})
    guard.start()
    said = ""
    deadline = time.monotonic() + 30
    while "waiting for" not in said and time.monotonic() < deadline:
        time.sleep(0.05)
        said += capsys.readouterr().err
    time.sleep(0.2)  # several polls: still waiting, still said once
    said += capsys.readouterr().err
    assert guard.is_alive() and lock.exists()
    assert said.count(f"waiting for {lock}: another process is building DeepSpeed's deepspeed_shm_comm op") == 1
    assert "if no build is running, delete that file (it is removed anyway once 10 min old)" in said
    lock.unlink()  # the other process's build ends
    guard.join(timeout=10)
    assert not guard.is_alive()


def test_no_extension_cache_yet_is_nothing_to_wait_for(tmp_path):
    clear_stale_build_locks(tmp_path / "absent")
