"""Teachers write the responses of the mixture; each returns, per task, a kept `Candidate` or why none was kept.

- `SolverTeacher`: the task's own solver writes the reasoning (optionally with the source's systematic flaw);
- `ModelTeacher`: a model samples several paths through a rollout engine, only verified ones are kept;
- `AgenticTeacher`: the solver's code runs in the sandbox; kept only when the printed result gives the answer.
"""

from cold_start_data.teachers.agentic import AgenticTeacher
from cold_start_data.teachers.base import Candidate, TeacherResult
from cold_start_data.teachers.model import ModelTeacher
from cold_start_data.teachers.solver import SolverTeacher

__all__ = ["AgenticTeacher", "Candidate", "ModelTeacher", "SolverTeacher", "TeacherResult"]
