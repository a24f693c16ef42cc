"""The placement plan, without Ray: numbers against hand-computed layouts, and the refusals with their keys."""

import pytest

from posttrain.commands.recipes import RECIPES_DIR
from posttrain.placement import NodeShape, PlacementError, bundle_specs, make_plan
from posttrain.recipe_checks import load_recipe

KEYE_8B = RECIPES_DIR / "keye-8b" / "rl.yaml"
MINIMAL = "name: t\nstages:\n  - kind: rl\n"


def recipe(tmp_path, *overrides, text=MINIMAL):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return load_recipe(path, list(overrides), check_environment=False)


def layout(plan, role):
    return [(s.rank, s.bundle.node, s.bundle.index, s.gpus, s.bundle.devices, s.cpus) for s in plan.of(role)]


def test_keye_8b_puts_learners_on_one_node_and_engines_on_the_other():
    plan = make_plan(load_recipe(KEYE_8B, check_environment=False))
    assert [n.name for n in plan.nodes] == ["node0", "node1"]
    assert layout(plan, "learner") == [(i, 0, i, 1, (i,), 8) for i in range(8)]
    assert layout(plan, "rollout") == [(i, 1, i, 1, (i,), 4) for i in range(8)]
    rewards = plan.of("reward")
    assert len(rewards) == 16 + 2 and all(s.bundle is None and s.gpus == 0 and s.cpus == 1 for s in rewards)
    # node0: 8 learners x 8 CPUs = 64 of 128; node1: 8 engines x 4 = 32, and the 18 reward CPUs float
    assert [sum(b.cpus for b in plan.bundles if b.node == n) for n in (0, 1)] == [64, 32]
    assert bundle_specs(plan, 1)[0] == {"CPU": 4.0, "GPU": 1.0}


def test_keye_8b_distill_gives_the_teachers_the_gpus_the_engines_leave():
    plan = make_plan(load_recipe(RECIPES_DIR / "keye-8b" / "distill.yaml", check_environment=False))
    assert layout(plan, "learner") == [(i, 0, i, 1, (i,), 8) for i in range(8)]
    assert layout(plan, "rollout") == [(i, 1, i, 1, (i,), 4) for i in range(4)]
    teachers = plan.of("teacher")
    assert len(teachers) == 4 and all(s.bundle is None and s.gpus == 1 and s.cpus == 4 for s in teachers)


def test_colocated_shares_each_learner_gpu_with_one_engine(tmp_path):
    r = recipe(tmp_path, "cluster.placement=colocated", "cluster.gpus_per_node=4", "cluster.num_cpus=8",
               "cluster.num_learners=4", "cluster.gpus_per_learner=0.5", "cluster.cpus_per_learner=1",
               "rollout.num_workers=4", "rollout.gpus_per_worker=0.4", "rollout.cpus_per_worker=0.5",
               "rollout.engine=vllm")
    plan = make_plan(r)
    assert len(plan.bundles) == 4 and all(b.gpus == 1 and b.cpus == 1.5 for b in plan.bundles)
    assert layout(plan, "learner") == [(i, 0, i, 0.5, (i,), 1) for i in range(4)]
    assert layout(plan, "rollout") == [(i, 0, i, 0.4, (i,), 0.5) for i in range(4)]
    assert bundle_specs(plan, 0) == [{"CPU": 1.5, "GPU": 1.0}] * 4


def test_tensor_parallel_engines_take_consecutive_gpus_and_fill_nodes_in_order(tmp_path):
    plan = make_plan(recipe(tmp_path, "cluster.gpus_per_node=8", "cluster.num_cpus=16", "cluster.num_learners=4",
                            "cluster.gpus_per_learner=1", "rollout.engine=vllm", "rollout.num_workers=2",
                            "rollout.gpus_per_worker=2"))
    assert layout(plan, "learner") == [(i, 0, i, 1, (i,), 0.5) for i in range(4)]
    assert layout(plan, "rollout") == [(0, 0, 4, 2, (4, 5), 0.5), (1, 0, 5, 2, (6, 7), 0.5)]


def test_a_running_clusters_nodes_pin_the_bundles():
    r = load_recipe(KEYE_8B, check_environment=False)
    nodes = [NodeShape("10.0.0.2", 96, 8, "node:10.0.0.2"), NodeShape("10.0.0.3", 96, 8, "node:10.0.0.3")]
    plan = make_plan(r, nodes)
    assert bundle_specs(plan, 0)[0] == {"CPU": 8.0, "GPU": 1.0, "node:10.0.0.2": 0.001}
    assert {plan.nodes[s.bundle.node].name for s in plan.of("rollout")} == {"10.0.0.3"}


def test_too_few_gpus_is_refused_with_the_keys_and_the_node_count_that_fits():
    r = load_recipe(KEYE_8B, ["cluster.nodes=1"], check_environment=False)
    with pytest.raises(PlacementError) as error:
        make_plan(r, source="rl.yaml")
    message = str(error.value)
    assert message.startswith("rl.yaml: the actors do not fit the cluster (1 node x (8 GPUs, 128 CPUs)); left over: "
                              "rollout 0, rollout 1, rollout 2, rollout 3, rollout 4, rollout 5, rollout 6, rollout 7")
    assert "they ask for 16 GPUs and 114 CPUs" in message  # 8x8 + 8x4 + (16+2)x1 CPUs
    assert "set cluster.nodes: 2" in message and "cluster.placement: colocated" in message
    for key in ("cluster.num_learners 8", "cluster.gpus_per_learner 1", "rollout.gpus_per_worker 1"):
        assert key in message


def test_an_actor_larger_than_any_node_names_its_own_keys(tmp_path):
    r = recipe(tmp_path, "cluster.gpus_per_node=8", "rollout.engine=vllm", "rollout.gpus_per_worker=16")
    with pytest.raises(PlacementError, match=r"one rollout asks for more than any node has \(16 GPUs, 0.5 CPUs\): "
                                             r"lower rollout.gpus_per_worker / rollout.cpus_per_worker"):
        make_plan(r)


@pytest.mark.parametrize("overrides, expected", [
    (["cluster.gpus_per_learner=0.5", "cluster.gpus_per_node=1"], "cluster.gpus_per_learner is 0.5: a fraction"),
    (["rollout.engine=vllm", "rollout.gpus_per_worker=0.5"], "rollout.gpus_per_worker is 0.5: a fraction"),
    (["rollout.engine=transformers", "rollout.gpus_per_worker=1"], "rollout.engine 'transformers' generates on the CPU"),
    (["cluster.placement=colocated", "cluster.gpus_per_learner=0.6", "rollout.gpus_per_worker=0.6",
      "rollout.engine=vllm"], "fractions summing to at most 1"),
    (["cluster.placement=colocated", "cluster.gpus_per_learner=0.5", "rollout.gpus_per_worker=0.5",
      "rollout.engine=vllm", "rollout.num_workers=2"], "rollout.num_workers (2) must equal cluster.num_learners (1)"),
    (["cluster.placement=colocated", "cluster.gpus_per_learner=0.5", "rollout.gpus_per_worker=0.4",
      "rollout.engine=vllm", "rollout.engine_options.gpu_memory_utilization=0.9"], "gpu_memory_utilization (0.9)"),
    (["cluster.nodes=2"], "cluster.address is not set"),
])
def test_impossible_layouts_are_refused_whatever_the_cluster(tmp_path, overrides, expected):
    with pytest.raises(PlacementError) as error:
        make_plan(recipe(tmp_path, *overrides, "cluster.gpus_per_node=8", "cluster.num_cpus=64"))
    assert expected in str(error.value)


def test_cli_plan_shows_gpus_for_every_learner_and_engine(capsys, monkeypatch):
    from posttrain.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plan", str(KEYE_8B), "--declared"]) == 0  # 2 x 8 GPUs, whatever Ray runs on this machine
    rows = [line for line in capsys.readouterr().out.splitlines() if "learner " in line or "rollout " in line]
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in rows]
    assert len(cells) == 16 and all(c[3] == "1" for c in cells)  # every learner and engine shows its GPU
    assert {c[1] for c in cells if c[0].startswith("rollout")} == {"node1"}
    assert main(["plan", str(KEYE_8B), "cluster.nodes=1", "--declared"]) == 2
    assert "set cluster.nodes: 2" in capsys.readouterr().err


def test_cli_plan_colocated_on_one_node_shows_shared_gpus(capsys, monkeypatch):
    from posttrain.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plan", str(KEYE_8B), "cluster.address=null", "cluster.nodes=1", "cluster.placement=colocated",
                 "cluster.gpus_per_learner=0.5", "rollout.gpus_per_worker=0.4",
                 "rollout.engine_options.gpu_memory_utilization=0.35"]) == 0
    out = capsys.readouterr().out
    assert "colocated placement on the declared local cluster" in out
    assert out.count("0.5 (shared)") == 8 and out.count("0.4 (shared)") == 8


SERVED = MINIMAL + ("reward:\n  components:\n    - {spec: math}\n    - {spec: reward_model, options: {model: m}, "
                    "serve: {replicas: 2, cpus: 4, gpus: 1}}\n")


def test_reward_server_replicas_are_counted_with_their_gpus_and_refused_when_they_do_not_fit(tmp_path):
    plan = make_plan(recipe(tmp_path, "cluster.gpus_per_node=2", "cluster.num_cpus=16", text=SERVED))
    servers = plan.of("reward_server")
    assert [(s.rank, s.cpus, s.gpus, s.bundle) for s in servers] == [(0, 4, 1, None), (1, 4, 1, None)]
    with pytest.raises(PlacementError) as error:  # the node has one GPU: the second replica has none
        make_plan(recipe(tmp_path, "cluster.gpus_per_node=1", "cluster.num_cpus=16", text=SERVED))
    message = str(error.value)
    assert "left over: reward_server 1" in message
    assert "reward servers 2 replicas (reward.components[].serve) with 8 CPUs and 2 GPUs" in message


DISTILL = ("name: t\nstages:\n  - kind: distill\n    teachers:\n      - {model: a, cpus: 2, gpus: 1, replicas: 2}\n"
           "      - {model: b, cpus: 1, route: {mode: think}}\n")


def test_teacher_replicas_are_placed_and_refused_when_they_do_not_fit(tmp_path):
    plan = make_plan(recipe(tmp_path, "cluster.gpus_per_node=2", "cluster.num_cpus=16", text=DISTILL))
    assert [(s.rank, s.cpus, s.gpus) for s in plan.of("teacher")] == [(0, 2, 1), (1, 2, 1), (2, 1, 0)]
    with pytest.raises(PlacementError) as error:  # one GPU: the second GPU teacher replica has none
        make_plan(recipe(tmp_path, "cluster.gpus_per_node=1", "cluster.num_cpus=16", text=DISTILL))
    assert "left over: teacher 1" in str(error.value)
    assert "teachers 3 replicas (stages[].teachers) with 5 CPUs and 2 GPUs" in str(error.value)
