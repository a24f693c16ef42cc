"""Warnings and errors that Ray actors log, written into the run directory and announced after each stage.

Ray starts here with `log_to_driver=False` (its relayed lines would tangle with the progress bars), which used to
leave every actor's warnings in Ray's session folder, unseen: DeepSpeed's "autocast is on outside the engine,
running in fp32" is one line in a learner's log, and the run looked fine. Now every Ray worker runs `setup` at
start (Ray's `worker_process_setup_hook`): records of level WARNING and above, and Python `warnings`, go to
`<run>/actor-logs/<host>-<pid>.log`, one file per process so nodes sharing the run directory never interleave.
The driver counts new records after each stage and prints one line naming the folder and the first message.

Knows nothing of what the actors do. DeepSpeed's and transformers' loggers do not pass records up to the root,
so the handler is added to them too; vLLM's is left unconfigured (`VLLM_CONFIGURE_LOGGING=0`) so that it does.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

from rich.console import Console
from rich.markup import escape

LOG_DIR_ENV = "POSTTRAIN_ACTOR_LOG_DIR"
SETUP_HOOK = "posttrain.actor_logs.setup"
FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")  # how FORMAT starts
LIBRARY_LOGGERS = ("DeepSpeed", "transformers")  # loggers that do not pass records up to the root
_handler: logging.Handler | None = None


def runtime_env(run_dir: Path) -> dict:
    """The job-level `runtime_env` for `ray.init`: every worker of the run logs into `run_dir`."""
    # vLLM left to configure its logger would replace its handlers and stop passing records up to the root
    env_vars = {LOG_DIR_ENV: str(log_dir(run_dir)), "VLLM_CONFIGURE_LOGGING": "0"}
    return {"env_vars": env_vars, "worker_process_setup_hook": SETUP_HOOK}


def log_dir(run_dir: Path) -> Path:
    return Path(run_dir).resolve() / "actor-logs"


def setup() -> None:
    """Ray calls this in each worker process before it runs anything. The file is opened at the first record,
    so a quiet actor leaves no file."""
    global _handler
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder or _handler is not None:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    _handler = logging.FileHandler(Path(folder) / f"{socket.gethostname()}-{os.getpid()}.log", delay=True)
    _handler.setLevel(logging.WARNING)
    _handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(_handler)
    logging.captureWarnings(True)  # warnings.warn(...) becomes a record of the "py.warnings" logger
    for name in LIBRARY_LOGGERS:  # imported later, they add their own handler and keep this one
        logging.getLogger(name).addHandler(_handler)


class ActorLogWatch:
    """The driver's side: which records the actors have written, and a line when a stage added some."""

    def __init__(self, run_dir: Path):
        self.dir = log_dir(run_dir)
        self.seen = {path: len(lines) for path, lines in self._records().items()}

    def announce(self, console: Console, label: str) -> None:
        records = self._records()
        new = sorted(line for path, lines in records.items() for line in lines[self.seen.get(path, 0):])
        if new:  # records start with their time, so the sorted first is the earliest
            console.print(f"[yellow]{label}: actors logged {len(new)} warning(s) or error(s), first: "
                          f"{escape(new[0][:240])}[/]\n  all in {self.dir}", soft_wrap=True)
        self.seen = {path: len(lines) for path, lines in records.items()}

    def _records(self) -> dict[Path, list[str]]:
        """Each file's records: lines that start one (a traceback's continuation lines do not)."""
        if not self.dir.is_dir():
            return {}
        return {path: [line for line in path.read_text(errors="replace").splitlines() if RECORD.match(line)]
                for path in sorted(self.dir.glob("*.log"))}
