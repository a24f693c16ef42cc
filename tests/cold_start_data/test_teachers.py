import random

from cold_start_data.judge import Judgement, PassRateJudge, StepCountJudge
from cold_start_data.sources.arithmetic import addition_task
from cold_start_data.sources.small_detail import colour_task, dots_task
from cold_start_data.teachers import AgenticTeacher, ModelTeacher, SolverTeacher
from cold_start_data.teachers.agentic import ToolOutput, replay_problem
from cold_start_data.teachers.model import most_agreed
from keye_protocol.chat import Mode, parse_response
from rollout.types import Completion


class ScriptedEngine:
    """Answers request i, sample k with script[i][k] (as a rollout engine would)."""

    def __init__(self, script):
        self.script, self.requests = script, []

    def generate(self, requests, sampling):
        self.requests.append((requests, sampling))
        return [Completion(r.request_id, k, [], [], self.script[i][k], [], [], "stop")
                for i, r in enumerate(requests) for k in range(sampling.n)]


def test_solver_flaw_rate_hits_only_flawable_tasks():
    teacher = SolverTeacher(flaw_rate=0.6, seed=0)
    carry = [addition_task(10 + i % 80, 19) for i in range(500)]  # ones 0-9 + 9: carries unless ones digit 0
    plain = [addition_task(10, 11) for _ in range(50)]
    results = teacher.write([(t, Mode.THINK, None) for t in carry + plain])
    flawable = [r for t, r in zip(carry, results) if t.flawed_solution is not None]
    rate = sum(r.candidate.flawed for r in flawable) / len(flawable)
    assert 0.53 < rate < 0.67
    assert not any(r.candidate.flawed for r in results[len(carry):])
    flawed = next(r for r in flawable if r.candidate.flawed)
    assert "carry" not in parse_response(flawed.candidate.response).think
    assert SolverTeacher(0.0).write([(carry[1], Mode.THINK, None)])[0].candidate.flawed is False


def test_solver_repeat_rate_loops_the_last_step_of_that_share_and_keeps_the_answer():
    tasks = [addition_task(37, 45) for _ in range(400)]
    clean = SolverTeacher(seed=0).write([(t, Mode.THINK, None) for t in tasks[:1]])[0].candidate.response
    results = SolverTeacher(seed=0, repeat_rate=0.3).write([(t, Mode.THINK, None) for t in tasks])
    looped = [r.candidate.response for r in results if r.candidate.response != clean]
    assert 0.24 < len(looped) / len(tasks) < 0.36
    steps = parse_response(looped[0]).think.splitlines()
    assert steps[-4:] == [steps[-1]] * 4 and steps[:-3] == parse_response(clean).think.splitlines()
    assert parse_response(looped[0]).boxed == parse_response(clean).boxed == "82"


def test_model_teacher_keeps_only_verified_paths():
    task = addition_task(37, 45)
    script = [["<think>7+5=12</think><answer>\\boxed{72}</answer>",  # wrong
               "<think>7+5=12, carry 1</think><answer>\\boxed{82}</answer>",  # right
               "\\boxed{82}",  # right answer, wrong format for think
               ""]]  # failed generation
    teacher = ModelTeacher(ScriptedEngine(script), samples=4)
    result = teacher.write([(task, Mode.THINK, None)])[0]
    assert (result.sampled, result.verified) == (4, 1)
    assert result.candidate.response == script[0][1]
    none = ModelTeacher(ScriptedEngine([[script[0][0]] * 4]), samples=4).write([(task, Mode.THINK, None)])[0]
    assert none.candidate is None and none.reason == "no verified path among 4"


def test_step_frequency_picks_the_path_most_paths_agree_with():
    good = ["<think>a\nb</think><answer>\\boxed{82}</answer>", "<think>x\nb</think><answer>\\boxed{82}</answer>",
            "<think>x\nb</think><answer>\\boxed{82}</answer>"]
    assert most_agreed(good) == 1
    teacher = ModelTeacher(ScriptedEngine([good]), samples=3, step_frequency=True)
    assert teacher.write([(addition_task(37, 45), Mode.THINK, None)])[0].candidate.response == good[1]


def test_model_teacher_auto_think_samples_by_verdict_and_wraps_the_path():
    think = "<think>7+5=12, carry 1</think><answer>\\boxed{82}</answer>"
    engine = ScriptedEngine([[think], ["\\boxed{5}"]])
    items = [(addition_task(37, 45), Mode.AUTO_THINK, Judgement(True, "a carry")),
             (addition_task(2, 3), Mode.AUTO_THINK, Judgement(False, "one step"))]
    # complex tasks are sampled in think mode, simple ones in no_think (one request batch per mode)
    engine.generate = lambda requests, sampling: [  # noqa: E731
        Completion(r.request_id, 0, [], [], think if r.mode == "think" else "\\boxed{5}", [], [], "stop")
        for r in requests]
    out = [r.candidate.response for r in ModelTeacher(engine, samples=1).write(items)]
    assert out[0] == ("<analysis>This is multi-step and needs reasoning: a carry.</analysis>"
                      "<think>7+5=12, carry 1</think><answer>\\boxed{82}</answer>")
    assert out[1] == ("<analysis>This is simple, so I can answer directly: one step.</analysis>"
                      "<answer>\\boxed{5}</answer>")


def test_pass_rate_judge():
    engine = ScriptedEngine([["\\boxed{82}", "\\boxed{72}", "\\boxed{72}", "\\boxed{72}"],
                             ["\\boxed{5}"] * 4])
    judge = PassRateJudge(ModelTeacher(engine), n=4, threshold=0.5)
    verdicts = judge.judge([addition_task(37, 45), addition_task(2, 3)])
    assert [v.complex for v in verdicts] == [True, False]
    assert verdicts[0].reason == "direct answers were right 1 of 4 times"


def test_step_count_judge():
    verdicts = StepCountJudge(min_steps=3).judge([addition_task(2, 3), addition_task(37, 45)])
    assert [(v.complex, v.reason) for v in verdicts] == [(False, "solving it takes 2 steps"),
                                                        (True, "solving it takes 3 steps")]


def test_agentic_teacher_runs_the_code_in_the_sandbox():
    teacher = AgenticTeacher()
    for task in (colour_task(random.Random(0)), dots_task(random.Random(1))):
        result = teacher.write_one(task)
        assert result.candidate is not None, result.reason
        parsed = parse_response(result.candidate.response)
        assert parsed.code_blocks == [task.tool.code] and parsed.final_answer == task.answer
        assert len(result.candidate.sandbox_images[0]) == 1
        zoom = result.candidate.sandbox_images[0][0]
        assert zoom.size == (160, 160)  # the 40 px frame, zoomed 4x
        assert replay_problem(result.candidate.response, task.images, teacher.run_tool) is None


def test_agentic_samples_whose_code_fails_or_misleads_are_rejected():
    task = colour_task(random.Random(0))
    crash = AgenticTeacher(lambda code, images: ToolOutput("", 1, "ZeroDivisionError: x", status="error"))
    assert crash.write_one(task).reason == "sandbox: error (exit 1) ZeroDivisionError: x"
    liar = AgenticTeacher(lambda code, images: ToolOutput("centre colour: (20, 20, 20)\n", 0))
    assert liar.write_one(task).reason == f"sandbox output gives 'black', expected {task.answer!r}"


def test_replay_catches_a_recorded_output_the_code_does_not_print():
    response = ("<think>x\n```python\nprint(6 * 7)\n```\n<sandbox_output>41\n</sandbox_output>\n</think>"
                "<answer>\\boxed{41}</answer>")
    problem = replay_problem(response, [], AgenticTeacher().run_tool)
    assert problem == "sandbox: code block 1 prints '42', the response records '41'"
    assert replay_problem(response.replace("41", "42"), [], AgenticTeacher().run_tool) is None
