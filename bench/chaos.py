"""Chaos run (issue 20): `tiny/rl_math` while its Ray actors and its driver are killed with SIGKILL.

Every `--kill-every` RL steps a random rollout, reward or learner actor of the run is SIGKILLed (found as a
descendant process of the run's driver whose title is `ray::RolloutWorker`, `ray::RewardWorker` or
`ray::LearnerActor`: other runs' Ray clusters on the machine are never touched), and once, after a checkpoint,
the whole driver with its Ray processes. A run that dies (the driver kill; a learner kill, which the learner
group does not survive in-process) is started again with the same command and resumes from its checkpoint.
Reported: kills survived, time lost per kill (in-process kills: the step's wall time against the undisturbed
run's same step; restarts: from the kill until the run is again past the last step it had logged), whether
every trace step is there exactly once (`traces.jsonl`: P x G records per step, no (step, prompt, sample)
twice), and held-out accuracy after against the 95% interval of an undisturbed run with the same steps.

The SFT stage is not what is attacked: its finished directory (and the data) are copied from `--sft-from`
(default `runs/tiny-rl-math`, what `make run` leaves) when it is there, so only the RL stage runs.

Usage: python -m bench.chaos [--steps 300] [--kill-every 25] [--checkpoint-every 25] [--seed 0]
                             [--baseline runs/<dir> | --baseline run]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROLES = {"rollout": "ray::RolloutWorker", "reward": "ray::RewardWorker", "learner": "ray::LearnerActor"}
RL = "01-rl"


@dataclass
class Kill:
    step: int  # the RL step in progress when it landed
    target: str  # rollout | reward | learner | driver
    pid: int | None = None
    at_s: float = 0.0  # since the chaos run started
    logged_before: int = -1  # last trace step written when it landed
    restarted: bool = False  # the run died and was started again
    lost_s: float | None = None
    note: str = ""


@dataclass
class Run:
    command: list[str]
    stage_dir: Path
    step_done_at: dict[int, float] = field(default_factory=dict)  # trace step -> first time seen written
    starts: int = 0
    outputs: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ processes
def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def actor_pids(driver: int, role: str) -> list[int]:
    return [pid for pid in descendants(driver) if title(pid).startswith(ROLES[role])]


def kill_tree(process: subprocess.Popen) -> None:
    """The driver and everything it started (its session, and any descendant that left it), as a crash would."""
    pids = descendants(process.pid)
    for kill in (lambda: os.killpg(process.pid, signal.SIGKILL), *[lambda p=p: os.kill(p, signal.SIGKILL)
                                                                   for p in pids]):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


# ------------------------------------------------------------------------------------------ run files
def last_step(stage_dir: Path) -> int:
    """The step of the last complete line of traces.jsonl (-1: none), from the file's tail."""
    path = stage_dir / "traces.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 65536))
            lines = f.read().splitlines()
    except OSError:
        return -1
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return -1


def check_traces(stage_dir: Path, steps: int, per_step: int) -> dict:
    keys = Counter()
    for line in (stage_dir / "traces.jsonl").read_text().splitlines():
        record = json.loads(line)
        keys[(record["step"], record["prompt_id"], record["sample_index"])] += 1
    per = Counter(step for step, _, _ in keys.elements())
    missing = [s for s in range(steps) if per.get(s, 0) < per_step]
    duplicated = sorted({k[0] for k, n in keys.items() if n > 1} | {s for s, n in per.items() if n > per_step})
    extra = sorted(s for s in per if not 0 <= s < steps)
    return {"steps_expected": steps, "records_per_step": per_step, "records": sum(per.values()),
            "missing_steps": missing, "duplicated_steps": duplicated, "unexpected_steps": extra,
            "ok": not (missing or duplicated or extra)}


def seed_from(source: Path, run_dir: Path) -> bool:
    """Copy the finished SFT stage, data and initial model of an earlier run, so only the RL stage runs."""
    if not (source / "00-sft" / "done.json").exists() or (run_dir / "00-sft").exists():
        return (run_dir / "00-sft" / "done.json").exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("data", "init-model", "00-sft"):
        shutil.copytree(source / name, run_dir / name, ignore=shutil.ignore_patterns("checkpoints"))
    return True


def summary(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "done.json").read_text())


# ------------------------------------------------------------------------------------------ driving a run
def command(name: str, runs: Path, steps: int, checkpoint_every: int) -> list[str]:
    warmup = [f"stages.1.learner.warmup_steps={steps // 2}"] if steps <= 10 else []  # the recipe warms up 10
    return [sys.executable, "-m", "posttrain.cli", "run", "tiny/rl_math", f"name={name}", f"runs_dir={runs}",
            f"stages.1.steps={steps}", f"stages.1.checkpoint_every={checkpoint_every}", *warmup]


def start(run: Run, log: Path) -> subprocess.Popen:
    run.starts += 1
    out = open(log.with_name(f"{log.stem}-{run.starts}.log"), "w")
    run.outputs.append(out.name)
    return subprocess.Popen(run.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def watch(run: Run, t0: float) -> int:
    step = last_step(run.stage_dir)
    if step >= 0 and step not in run.step_done_at:
        for s in range(step + 1):
            run.step_done_at.setdefault(s, time.monotonic() - t0)
    return step


def drive(run: Run, plan: dict[int, str], log: Path, rng: random.Random, stall_s: float,
          max_starts: int) -> tuple[list[Kill], int]:
    """Run to the end, killing as `plan` says ({step: target}), restarting a run that died. Returns the kills
    and the final exit status."""
    t0, kills, pending = time.monotonic(), [], dict(plan)
    process, last_progress, seen, blame = start(run, log), time.monotonic(), -1, None
    while True:
        step = watch(run, t0)
        if step != seen:
            seen, last_progress = step, time.monotonic()
        for kill in kills:  # a restarted run is back once it has logged past where it was
            if kill.restarted and kill.lost_s is None and step > kill.logged_before:
                kill.lost_s = round(time.monotonic() - t0 - kill.at_s, 1)
        due = [s for s in pending if s <= step + 1]
        if due and process.poll() is None:
            time.sleep(rng.uniform(0.0, 0.4))  # land somewhere inside the step, not at its start
            target = pending.pop(min(due))
            blame = hit(process, target, step + 1, step, time.monotonic() - t0, rng)
            kills.append(blame)
            if target == "driver":
                kill_tree(process)
        code = process.poll()
        if code == 0:
            return kills, 0
        if code is not None or time.monotonic() - last_progress > stall_s:
            if code is None:
                kill_tree(process)
                code = "stalled"
            if blame is None:  # died of nothing we did: a bug the chaos run found
                blame = Kill(step + 1, "none", at_s=round(time.monotonic() - t0, 1), logged_before=step)
                kills.append(blame)
            blame.restarted = True
            blame.note = blame.note or f"the run exited ({code}) and was started again"
            if run.starts >= max_starts:
                return kills, code
            process, last_progress, blame = start(run, log), time.monotonic(), None
        time.sleep(0.2)


def hit(process: subprocess.Popen, target: str, step: int, logged: int, at_s: float, rng: random.Random) -> Kill:
    if target == "driver":
        return Kill(step, target, process.pid, round(at_s, 1), logged, note="driver and its Ray processes")
    pids = actor_pids(process.pid, target)
    if not pids:
        return Kill(step, target, None, round(at_s, 1), logged, note="no such actor alive: nothing killed")
    pid = rng.choice(pids)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return Kill(step, target, pid, round(at_s, 1), logged, note="exited before the kill")
    return Kill(step, target, pid, round(at_s, 1), logged)


def kill_plan(steps: int, every: int, checkpoint_every: int, rng: random.Random) -> dict[int, str]:
    """An actor kill every `every` steps and the driver once, after the first checkpoint, midway."""
    plan = {s: rng.choice(list(ROLES)) for s in range(every, steps, every)}
    driver = max(checkpoint_every + 1, steps // 2)
    while driver in plan and driver < steps - 1:
        driver += 1
    plan[min(driver, steps - 1)] = "driver"
    return plan


# ------------------------------------------------------------------------------------------ the report
def step_walls(run: Run) -> dict[int, float]:
    times = run.step_done_at
    return {s: times[s] - times[s - 1] for s in sorted(times) if s - 1 in times}


def time_lost(kills: list[Kill], chaos: Run, baseline: Run | None) -> None:
    walls = step_walls(chaos)
    reference = step_walls(baseline) if baseline else {}
    quiet = [w for s, w in walls.items() if s not in {k.step for k in kills}]
    typical = statistics.median(quiet) if quiet else 0.0
    for kill in kills:
        if kill.restarted or kill.step not in walls:
            continue
        kill.lost_s = round(walls[kill.step] - reference.get(kill.step, typical), 1)


def accuracy_check(chaos: dict, baseline: dict) -> dict:
    out = {}
    for mode, undisturbed in baseline["eval_after"].items():
        got = chaos["eval_after"][mode]["accuracy"]
        low, high = undisturbed["interval"]
        out[mode] = {"chaos": got, "undisturbed": undisturbed["accuracy"], "interval": [round(low, 4),
                     round(high, 4)], "within": low <= got <= high}
    return out


def baseline_run(args, runs: Path) -> tuple[dict, Run | None]:
    """An undisturbed run's RL summary: `--baseline DIR` (a run dir with the same RL steps) or one run now."""
    if args.baseline != "run":
        stage = Path(args.baseline) / RL
        steps = yaml.safe_load((Path(args.baseline) / "recipe.yaml").read_text())["stages"][1]["steps"]
        if steps != args.steps:
            raise SystemExit(f"--baseline {args.baseline} ran {steps} RL steps, not {args.steps}: pass a run with "
                             f"the same steps, or --baseline run")
        return summary(stage), None
    name = f"chaos-baseline-{args.steps}"
    seed_from(Path(args.sft_from), runs / name)
    run = Run(command(name, runs, args.steps, args.checkpoint_every), runs / name / RL)
    if not (run.stage_dir / "done.json").exists():
        _, code = drive(run, {}, runs / f"{name}.log", random.Random(0), args.stall_s, max_starts=1)
        if code != 0:
            raise SystemExit(f"the undisturbed run failed ({code}); see {run.outputs[-1]}")
    return summary(run.stage_dir), run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="RL steps (the recipe's 300 by default)")
    parser.add_argument("--kill-every", type=int, default=25)
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", default="run", help="an undisturbed run dir with the same steps, or 'run'")
    parser.add_argument("--sft-from", default="runs/tiny-rl-math", help="a run whose finished SFT stage is reused")
    parser.add_argument("--runs", default="runs/chaos")
    parser.add_argument("--stall-s", type=float, default=300.0, help="no new trace step for this long: a hang")
    parser.add_argument("--max-starts", type=int, default=6)
    args = parser.parse_args()
    runs = Path(args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    name = f"chaos-{args.steps}-seed{args.seed}"
    if (runs / name).exists():
        shutil.rmtree(runs / name)
    reused = seed_from(Path(args.sft_from), runs / name)
    undisturbed, base = baseline_run(args, runs)
    rng = random.Random(args.seed)
    plan = kill_plan(args.steps, args.kill_every, args.checkpoint_every, rng)
    chaos = Run(command(name, runs, args.steps, args.checkpoint_every), runs / name / RL)
    started = time.monotonic()
    kills, code = drive(chaos, plan, runs / f"{name}.log", rng, args.stall_s, args.max_starts)
    time_lost(kills, chaos, base)
    recipe = yaml.safe_load((runs / name / "recipe.yaml").read_text())["stages"][1]
    report = {"steps": args.steps, "plan": plan, "sft_reused": reused, "exit": code, "starts": chaos.starts,
              "seconds": round(time.monotonic() - started, 1), "kills": [asdict(k) for k in kills],
              "kills_survived": sum(k.pid is not None for k in kills) if code == 0 else None}
    if code == 0:
        report["traces"] = check_traces(chaos.stage_dir, args.steps, recipe["prompts_per_step"] * recipe["group_size"])
        report["accuracy"] = accuracy_check(summary(chaos.stage_dir), undisturbed)
    else:
        report["failed"] = f"the run did not finish ({code}); its output: {chaos.outputs[-1]}"
    (runs / name / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(json.dumps(report))


def print_report(report: dict) -> None:
    print(f"chaos: {report['steps']} RL steps, exit {report['exit']}, {report['starts']} start(s), "
          f"{report['seconds']} s")
    for k in report["kills"]:
        print(f"  step {k['step']:>4}  {k['target']:<8} pid {k['pid']}  lost {k['lost_s']} s"
              f"{'  (run restarted)' if k['restarted'] else ''}  {k['note']}")
    if "traces" in report:
        t = report["traces"]
        print(f"  traces: {t['records']} records, missing {t['missing_steps']}, duplicated {t['duplicated_steps']}"
              f" -> {'ok' if t['ok'] else 'BROKEN'}")
        for mode, a in report["accuracy"].items():
            print(f"  {mode}: {a['chaos']:.3f} vs undisturbed {a['undisturbed']:.3f} {a['interval']} -> "
                  f"{'within' if a['within'] else 'OUTSIDE'}")


if __name__ == "__main__":
    main()
