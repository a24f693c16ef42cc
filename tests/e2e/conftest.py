"""The end-to-end recipes' CLI runs, two at a time, in the order of the tests that check them.

A test marked `cli_run(name)` gets, through the `cli_run` fixture, the finished run `RUNS[name]` of its module:
`RUNS[name](root, fixture)` writes what the run needs under `root` and returns the CLI argument lists to run there
one after the other (`fixture`: `request.getfixturevalue`, for session fixtures such as `llama_dir`). The first
test to ask queues the runs of every selected test, and two of them run at any time: two runs on 2 cores take
about 2/3 of their time one after the other (much of a run is imports, actor start-ups and waits, one core
each). Only runs of selected tests start, every one is waited for by its test, so none outlives the e2e tests;
what the tests assert is unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "cli_run(name): the test checks its module's RUNS[name], run two at a "
                                       "time in test order (tests/e2e/conftest.py)")


@dataclass
class CliRun:
    root: Path
    results: list[subprocess.CompletedProcess]  # one per command, up to the first that failed


def _key(item) -> tuple | None:
    marker = item.get_closest_marker("cli_run")
    return (item.module.__name__, marker.args[0]) if marker else None


class Runs:
    def __init__(self, request, tmp_path_factory):
        self.request, self.factory = request, tmp_path_factory
        self.order = list(dict.fromkeys(k for k in map(_key, request.session.items) if k))
        self.specs = {_key(i): getattr(i.module, "RUNS")[_key(i)[1]] for i in request.session.items if _key(i)}
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cli-run")
        self.started: dict[tuple, Future] = {}

    def start(self, key: tuple) -> Future:
        if key not in self.started:
            root = self.factory.mktemp(key[1])
            commands = self.specs[key](root, self.request.getfixturevalue)
            self.started[key] = self.pool.submit(self._run, root, commands)
        return self.started[key]

    @staticmethod
    def _run(root: Path, commands: list[list[str]]) -> CliRun:
        results = []
        for args in commands:
            results.append(subprocess.run([sys.executable, "-m", "posttrain.cli", *args], capture_output=True,
                                          text=True, timeout=900))
            if results[-1].returncode != 0:
                break
        return CliRun(root, results)

    def get(self, key: tuple) -> CliRun:
        for queued in self.order:  # the pool's two threads take them in this order
            self.start(queued)
        return self.started[key].result()


@pytest.fixture(scope="session")
def cli_runs(request, tmp_path_factory):
    runs = Runs(request, tmp_path_factory)
    yield runs
    runs.pool.shutdown(wait=True)


@pytest.fixture()
def cli_run(request, cli_runs) -> CliRun:
    key = _key(request.node)
    assert key, "mark the test with @pytest.mark.cli_run(name)"
    return cli_runs.get(key)
