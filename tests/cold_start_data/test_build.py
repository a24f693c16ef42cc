"""The issue's tests on a built mixture: parser round trip, proportions, agentic replay, decontamination,
byte-for-byte determinism."""

import hashlib
import json

import pytest

from cold_start_data.build import build
from cold_start_data.config import BuildConfig
from cold_start_data.dedup import normalise_prompt
from cold_start_data.formatting import response_text
from cold_start_data.mixer import bucket_shares
from cold_start_data.phash import phash, visual_hashes
from cold_start_data.teachers.agentic import replay_problem, sandbox_runner
from cold_start_data.verify import verify
from cold_start_data.writer import load_mixture
from keye_protocol.chat import parse_response
from rewards.format import format_problems


def test_every_record_round_trips_through_the_chat_parser(built):
    out, _ = built
    for row in load_mixture(out):
        assistant = row["messages"][-1]
        text = response_text(assistant["content"])
        assert text == row["response"]
        parsed = parse_response(text)
        assert parsed.problems == [], row["id"]
        assert format_problems(text, row["mode"]) == [], row["id"]
        assert verify(text, row["mode"], row["kind"], row["answer"]).ok, row["id"]
        assert row["messages"][0]["content"][-1]["text"].endswith({"no_think": "/no_think", "think": "/think",
                                                                  "auto_think": "/auto_think",
                                                                  "agentic": "/agentic_think"}[row["mode"]])
        assert parsed.reasoned == row["reasoned"] == (row["mode"] in ("think", "agentic") or (
            row["mode"] == "auto_think" and parsed.think is not None))


def test_proportions_match_the_target_within_one_sample(built, small):
    out, report = built
    rows = list(load_mixture(out))
    assert len(rows) == small["size"]
    for bucket, share in bucket_shares(BuildConfig(**small)).items():
        kept = sum(row["bucket"] == bucket for row in rows)
        assert abs(kept - small["size"] * share) < 1, bucket
    assert report["counts"]["by_bucket"] == {"agentic": 5, "auto_think": 1, "no_think": 17, "think": 12, "video": 5}


def test_agentic_code_reruns_in_the_sandbox_and_reproduces_its_output(built):
    out, _ = built
    agentic = [row for row in load_mixture(out) if row["mode"] == "agentic"]
    assert len(agentic) == 5
    run = sandbox_runner()
    for row in agentic:
        assert replay_problem(row["response"], row["images"], run) is None, row["id"]
        parsed = parse_response(row["response"])
        result = run(parsed.code_blocks[0], row["images"])
        assert result.stdout == parsed.sandbox_outputs[0]
        zoom = [i for i in row["messages"][-1]["content"] if i["type"] == "image"]
        assert len(zoom) == len(result.images) == 1
        assert phash(zoom[0]["image"]) == phash(result.images[0])


def _prompt_keys(rows, base):
    keys = set()
    for row in rows:
        images = [str(base / p) for p in row["images"]]
        frames = [str(base / p) for p in row["video"]] or None
        keys.add((normalise_prompt(row["prompt"]), visual_hashes(images, frames)))
    return keys


def test_no_evaluation_prompt_is_in_the_training_mixture(built):
    out, report = built
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert len(evals) >= 2 * 10  # eval_size per (bucket, mode, source)
    train = []
    for row in load_mixture(out):
        user = row["messages"][0]["content"]
        video = next((i["video"] for i in user if i["type"] == "video"), None)
        train.append((normalise_prompt(user[-1]["text"]), visual_hashes(row["images"], video)))
    eval_keys = _prompt_keys(evals, out)
    assert not eval_keys & set(train)
    text_only = {text for text, hashes in eval_keys if not hashes}
    assert not text_only & {text for text, hashes in train if not hashes}


def test_rl_prompts_cover_each_image_and_text_kind_and_stay_apart_from_the_held_out_ones(built, small, tmp_path):
    from cold_start_data.config import BuildConfig
    from cold_start_data.evalset import eval_rows, held_out, rl_prompts
    from cold_start_data.writer import MediaWriter

    out, _ = built
    config = BuildConfig(**small)
    tasks = rl_prompts(config, 3, ["think", "no_think"], held_out(config))
    kinds = {(mode, source) for _, mode, source, _ in tasks}
    assert {mode for mode, _ in kinds} == {"think", "no_think"}  # no auto_think, agentic or video
    assert len(tasks) == 3 * len(kinds) and ("think", "grounding") in kinds
    rows = eval_rows(tasks, MediaWriter(tmp_path), prefix="rl")
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert not _prompt_keys(rows, tmp_path) & _prompt_keys(evals, out)
    assert all(row["id"].startswith("rl-") and row["steps"] >= 1 for row in rows)


def test_an_external_eval_set_removes_its_prompts(built, small, tmp_path):
    out, _ = built
    rows = [r for r in load_mixture(out) if not r["images"] and not r["messages"][0]["content"][0]["video"]]
    prompts = [r["messages"][0]["content"][-1]["text"] for r in rows][:5]
    eval_file = tmp_path / "bench.jsonl"
    eval_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    report = build(BuildConfig(**small, eval_sets=[eval_file]), tmp_path / "again")
    again = {normalise_prompt(r["messages"][0]["content"][-1]["text"]) for r in load_mixture(tmp_path / "again")}
    assert not again & {normalise_prompt(p) for p in prompts}
    rejected = sum(v["reasons"].get("contaminated", 0) for v in report["rejections"].values())
    assert rejected >= 5


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_dataset_byte_for_byte(built, small, tmp_path):
    out, _ = built
    build(BuildConfig(**small), tmp_path / "twin")
    first, second = _digest(out), _digest(tmp_path / "twin")
    assert first == second
    assert any(name.endswith(".parquet") for name in first) and any(name.startswith("media/") for name in first)
    assert "report/token_lengths.png" in first


def test_an_existing_mixture_is_not_overwritten_by_accident(built, small):
    out, _ = built
    with pytest.raises(FileExistsError):
        build(BuildConfig(**small), out)
