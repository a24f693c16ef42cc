"""The solver teacher: the task's own worked solution, formatted for the requested mode.

With `flaw_rate` > 0 it writes the source's systematic flaw (e.g. the dropped carry of
`sources.arithmetic`) on that share of the tasks that have one. Flawed responses are wrong on purpose and
marked so: they stand in for the errors of real sampled reasoning, which RL after the cold start then
selects against (DESIGN.md, "learning at tiny scale"). The paper's data has no deliberate flaw; its
errors are whatever survived the checker.

With `repeat_rate` > 0 that share of the responses that show reasoning loop on their last step, written
`REPEATS` more times: still correct, so the checker keeps them, as it keeps the repetitive answers of real
teachers. Iterative alignment's repetition score is what removes them.
"""

from __future__ import annotations

import random
from dataclasses import replace

from cold_start_data.formatting import format_solution
from cold_start_data.judge import Judgement
from cold_start_data.tasks import Task
from cold_start_data.teachers.base import Candidate, TeacherResult
from keye_protocol.chat import Mode


REPEATS = 3


class SolverTeacher:
    name = "solver"

    def __init__(self, flaw_rate: float = 0.0, seed: int = 0, repeat_rate: float = 0.0):
        for name, rate in (("flaw_rate", flaw_rate), ("repeat_rate", repeat_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        self.flaw_rate, self.repeat_rate = flaw_rate, repeat_rate
        self.rng = random.Random(f"{seed}:solver-flaw")
        self.repeat_rng = random.Random(f"{seed}:solver-repeat")

    def write(self, items: list[tuple[Task, Mode, Judgement | None]]) -> list[TeacherResult]:
        results = []
        for task, mode, judgement in items:
            # Draw for every flawable task (even at rate 0) so the flaw pattern does not shift with the rate.
            flawed = task.flawed_solution is not None and self.rng.random() < self.flaw_rate
            solution = task.flawed_solution if flawed else task.solution
            if self.repeat_rng.random() < self.repeat_rate and solution.steps:  # drawn for every task, as above
                solution = replace(solution, steps=solution.steps + solution.steps[-1:] * REPEATS)
            complex_, reason = (judgement.complex, judgement.reason) if judgement else (None, "")
            response = format_solution(mode, solution, complex_, reason)
            results.append(TeacherResult(Candidate(response, self.name, flawed=flawed)))
        return results
