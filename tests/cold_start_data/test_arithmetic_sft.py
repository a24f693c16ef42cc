from cold_start_data.arithmetic_sft import arithmetic_sft_rows
from cold_start_data.sources.arithmetic import has_carry
from cold_start_data.verify import verify
from keye_protocol.chat import mode_of_prompt
from rewards.format import format_problems


def test_held_out_pairs_never_appear_in_training():
    split = arithmetic_sft_rows(3000, seed=0, n_eval=500)
    train = {r["prompt"] for r in split.train}
    held = {r["prompt"] for r in split.eval}
    assert len(held) == 500 and not train & held
    assert len(split.eval) == 1000  # one row per held-out pair and mode
    assert {r["mode"] for r in split.eval} == {"think", "no_think"}


def test_modes_alternate_and_rows_are_in_the_mode_formats():
    split = arithmetic_sft_rows(101, seed=1, carry_drop_rate=0.0, modes=("think", "no_think", "auto_think"))
    counts = {m: sum(r["mode"] == m for r in split.train) for m in ("think", "no_think", "auto_think")}
    assert counts == {"think": 34, "no_think": 34, "auto_think": 33}
    for row in split.train:
        user, assistant = row["messages"]
        assert mode_of_prompt(user["content"]).value == row["mode"]
        assert format_problems(assistant["content"], row["mode"]) == []
        assert verify(assistant["content"], row["mode"], "math", row["answer"]).ok  # no flaw at rate 0


def test_the_teacher_drops_the_carry_on_the_requested_share():
    split = arithmetic_sft_rows(4000, seed=0, carry_drop_rate=0.6)
    carry = [r for r in split.train if r["carry"]]
    assert all(has_carry(*map(int, r["prompt"][8:-1].split(" + "))) for r in carry)
    assert 0.55 < sum(r["flawed"] for r in carry) / len(carry) < 0.65
    assert not any(r["flawed"] for r in split.train if not r["carry"])
    for row in carry:
        answer = verify(row["messages"][1]["content"], row["mode"], "math", row["answer"])
        assert answer.ok is not row["flawed"]
        if row["flawed"]:  # a dropped carry into the tens costs exactly 10
            boxed = row["messages"][1]["content"].split("\\boxed{")[1].split("}")[0]
            assert int(row["answer"]) - int(boxed) == 10


def test_compact_think_fits_a_48_token_character_budget():
    split = arithmetic_sft_rows(500, seed=0, modes=("think",))
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    for row in split.train:
        text = row["messages"][1]["content"]
        chars = len(text) - sum(len(t) for t in tags) + len(tags)  # each tag is one token
        assert chars + 1 <= 48  # + eos
    assert split.train[0]["messages"][1]["content"].startswith("<think>")


def test_same_seed_same_rows():
    assert arithmetic_sft_rows(50, seed=3).train == arithmetic_sft_rows(50, seed=3).train
    assert arithmetic_sft_rows(50, seed=3).train != arithmetic_sft_rows(50, seed=4).train
