"""Actors' warnings reach the run directory and the driver's console (posttrain.actor_logs)."""

import io
import warnings

import ray
from rich.console import Console

from posttrain import actor_logs
from runtime.local_ray import local_ray


@ray.remote(num_cpus=0)
class Noisy:
    def warn(self) -> int:
        import logging

        from deepspeed.utils import logger  # DeepSpeed's own logger: it does not pass records to the root

        warnings.warn("a python warning from an actor")
        logger.warning("a DeepSpeed warning from an actor")
        logging.getLogger("vllm.worker").info("below WARNING: not written")
        return 1


def test_actor_warnings_reach_the_run_log_and_the_console(tmp_path):
    console = Console(file=io.StringIO(), width=200)
    watch = actor_logs.ActorLogWatch(tmp_path)
    with local_ray(1, address="local", log_to_driver=False, runtime_env=actor_logs.runtime_env(tmp_path)):
        # an actor with env vars of its own still gets the run's (Ray merges env_vars); naming the accelerator
        # keeps DeepSpeed from warning that it picked the CPU, as the toolkit's own actors do (posttrain.quiet)
        actor = Noisy.options(runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}}).remote()
        assert ray.get(actor.warn.remote()) == 1
    text = "\n".join(p.read_text() for p in (tmp_path / "actor-logs").glob("*.log"))
    assert "WARNING py.warnings" in text and "a python warning from an actor" in text
    assert "WARNING DeepSpeed" in text and "a DeepSpeed warning from an actor" in text
    assert "below WARNING" not in text

    watch.announce(console, "01-rl")
    out = console.file.getvalue()
    assert "01-rl: actors logged 2 warning(s) or error(s), first:" in out
    assert str(tmp_path.resolve() / "actor-logs") in out
    watch.announce(console, "02-rl")  # nothing new since: no line
    assert "02-rl" not in console.file.getvalue()


def test_quiet_actors_leave_no_line(tmp_path):
    console = Console(file=io.StringIO())
    actor_logs.ActorLogWatch(tmp_path).announce(console, "01-sft")
    assert console.file.getvalue() == ""
