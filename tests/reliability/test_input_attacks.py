"""Bad files and requests (issue 20): recipes with duplicate keys or runaway nesting, trace records holding
Infinity/NaN or terminal escapes, prompt rows that are not objects, and a trace server asked under a foreign
Host name; and (issue 33) data rows whose `messages` or `images` are a string, images that are FIFOs, devices or
directories, and image bytes that decode to nothing. Each must give a clear error (file and line) or be shown
safely, never a traceback."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.prompts import load_prompts
from posttrain.viewer.run import RunTraces
from posttrain.viewer.server import make_server
from posttrain.yaml_lines import load_yaml

RECORD = {"step": 0, "stage": "01-rl", "prompt_id": "p0", "sample_index": 0, "group": 0, "mode": "no_think",
          "prompt": "What is 2+2?", "answer": "4", "completion": "4", "finish_reason": "stop", "reward": 1.0,
          "reward_components": {"math": 1.0}, "reward_error": None, "reward_message": None, "advantage": 0.0,
          "weight_version": 0, "completion_tokens": 1, "images": []}


def test_a_duplicate_recipe_key_is_refused_with_its_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  preset: keye-tiny\nlearner:\n  lr: 1.0e-4\n  lr: 1.0e-2\n")
    with pytest.raises(ValueError, match=rf"{recipe}:5: duplicate key 'lr' \(learner.lr; first at line 4\)"):
        load_yaml(recipe)


def test_a_20000_deep_recipe_is_a_clear_error_not_a_recursion_traceback(tmp_path):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("model:\n  x: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        load_yaml(recipe)


def test_a_yaml_alias_bomb_is_refused_before_it_is_built(tmp_path):
    # 9 levels of 9 aliases each: 9^9 = 387 million values from a few hundred bytes
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 10)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(levels) + "\n")
    assert len(recipe.read_bytes()) < 600
    with pytest.raises(ValueError, match=rf"{recipe}: more than 100,000 values once its aliases"):
        load_yaml(recipe)  # the walk stops at the bound: milliseconds, not gigabytes
    anchors = tmp_path / "anchors.yaml"  # aliases as recipes use them stay fine
    anchors.write_text("sampling: &s {temperature: 1.0}\nrollout: {sampling: *s, eval_sampling: *s}\n")
    assert load_yaml(anchors)[0]["rollout"]["sampling"] == {"temperature": 1.0}


def write_traces(tmp_path: Path, records: list[dict]) -> Path:
    stage = tmp_path / "run" / "01-rl"
    stage.mkdir(parents=True)
    # json.dumps writes Infinity/NaN literals, as the trace writer would for a non-finite value
    (stage / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path / "run"


def non_finite_records() -> list[dict]:
    return [{**RECORD, "reward": float("inf")}, {**RECORD, "sample_index": 1, "advantage": float("nan")},
            {**RECORD, "sample_index": 2, "step": float("inf"), "reward_components": {"math": float("-inf")}}]


def test_traces_with_infinity_and_nan_are_shown(tmp_path, capsys):
    run = write_traces(tmp_path, non_finite_records())
    assert main(["traces", "show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 matching samples shown" in out and "inf" in out
    assert "1 unreadable line skipped (first: line 3, step: Input should be a valid integer" in out  # step Infinity


def test_an_escape_sequence_in_a_completion_reaches_the_terminal_escaped(tmp_path, capsys):
    evil = "clear \x1b[2J retitle \x1b]0;pwned\x07 colour \x1b[31m"
    run = write_traces(tmp_path, [{**RECORD, "completion": evil, "reward_message": "\x1b[5m"}])
    assert main(["traces", "show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out and "\\x1b]0;pwned\\x07" in out


def get(server, path: str, host: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    return response.status, response.read()


@pytest.fixture()
def served(tmp_path):
    server = make_server(RunTraces(write_traces(tmp_path, non_finite_records())))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_server_answers_non_finite_records_with_strict_json(served):
    port = served.server_address[1]
    for path in ("/api/run", "/api/samples"):
        status, body = get(served, path, f"127.0.0.1:{port}")
        assert status == 200
        data = json.loads(body, parse_constant=lambda name: pytest.fail(f"{path} sent the literal {name}"))
    assert {s["reward"] for s in data["samples"]} >= {"Infinity"}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.nip.io", ""])
def test_the_server_refuses_a_foreign_host_name(served, host):
    status, body = get(served, "/api/run", host)
    assert status == 421 and b"localhost" in body


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:{port}", "[::1]:{port}"])
def test_the_server_answers_loopback_names(served, host):
    status, _ = get(served, "/api/run", host.format(port=served.server_address[1]))
    assert status == 200


@pytest.mark.parametrize("line, message", [
    ('"just a string"', "a row must be a JSON object"),
    ('{"prompt": null, "answer": "4"}', "'prompt' must be non-empty text, got None"),
    ('{"messages": "hi"}', "'messages' must be a non-empty list"),
    ('[1, 2]', "a row must be a JSON object"),
    ('{"prompt": "q", "images": "x.png"}', "'images' must be a list of paths, got 'x.png'"),
    ('{"prompt": "q", "image": "x.png", "images": ["y.png"]}', "give 'images' .* or 'image' .*, not both"),
])
def test_a_malformed_prompt_row_is_an_error_naming_file_and_line(tmp_path, line, message):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 1+1?", "answer": "2"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"{prompts}:2: {message}"):
        load_prompts(prompts)


def test_a_single_image_key_is_read_as_the_prompts_image_not_ignored(tmp_path):
    from posttrain.prompts import messages_of

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What color?", "image": "x.png"}\n')
    [row] = load_prompts(prompts)
    assert messages_of(row)[0]["content"] == [{"type": "image", "image": "x.png"},
                                               {"type": "text", "text": "What color?"}]


def test_reward_check_names_the_row_that_is_not_an_object(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "q", "completion": "c", "ground_truth": "1"}\n"a bare string"\n')
    assert main(["reward", "check", "--reward", "math", "--data", str(rows)]) == 2
    assert f"{rows}:2: a row must be a JSON object" in capsys.readouterr().err


def test_line_and_paragraph_separators_inside_json_strings_do_not_split_a_row(tmp_path):
    """U+2028, U+2029 and U+0085 are whitespace to `str.splitlines` but ordinary characters inside a JSON string."""
    from posttrain.data_files import read_jsonl
    from posttrain.traces import read_log
    from pretrain_data.shards import _jsonl_rows

    text = "a\u2028b\u2029c\u0085d"
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": text, "i": i}, ensure_ascii=False) + "\n" for i in range(2)),
                    encoding="utf-8")
    assert [r["prompt"] for r in read_jsonl(path)] == [text, text]
    assert [r["i"] for r in read_log(path)] == [0, 1]  # a trace with such a completion is not "torn"
    assert [row["prompt"] for _, row in _jsonl_rows(path)] == [text, text]


# ------------------------------------------------------------------ data rows (issue 33, item 8)
def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SFT_ROW = {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}


def test_sft_messages_given_as_a_string_are_refused_naming_the_file_row_and_fix(tmp_path):
    from posttrain.data_files import check_rows, read_rows
    from posttrain.sft_data import encode_sft_row

    path = _rows(tmp_path / "sft.jsonl", [SFT_ROW, {"messages": "What is 1+1? 2"}])
    with pytest.raises(ValueError, match=rf"{path} row 2: 'messages' must be a non-empty list of .* got str "
                                         rf"'What is 1\+1\? 2'; write it as \[{{\"role\": \"user\""):
        check_rows(read_rows(path), path, "sft")
    # a stage that encodes rows from elsewhere says the same, before the encoder is touched
    with pytest.raises(ValueError, match=r"sft.jsonl:2: 'messages' must be a non-empty list"):
        encode_sft_row({"messages": "hi"}, None, "sft.jsonl:2")


def test_a_string_under_images_is_refused_not_read_one_character_per_image(tmp_path, capsys):
    from posttrain.data_files import check_rows, read_rows

    path = _rows(tmp_path / "prompts.jsonl", [{"prompt": "q", "images": "cat.png"}])
    with pytest.raises(ValueError, match=rf"{path} row 1: 'images' must be a list, got the string \"cat.png\", "
                                         rf"which would be read one character per image; write \"images\": "
                                         rf"\[\"cat.png\"\]"):
        check_rows(read_rows(path), path, "prompts")
    rows = _rows(tmp_path / "rows.jsonl", [{"prompt": "q", "completion": "c", "images": "cat.png"}])
    assert main(["reward", "check", "--reward", "math", "--data", str(rows)]) == 2
    assert f"{rows}:1: 'images' must be a list of paths, got the string \"cat.png\"" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_an_image_path_that_is_no_regular_file_is_refused_at_run_start_without_opening_it(tmp_path, kind):
    import io
    import os

    from rich.console import Console

    from posttrain.data import prepare_data
    from posttrain.recipe import Recipe

    image = {"fifo": tmp_path / "pipe.png", "directory": tmp_path / "dir.png", "device": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(image)  # opening it for reading would wait for a writer: the run would never start
    elif kind == "directory":
        image.mkdir()
    what = {"fifo": "a FIFO \\(named pipe\\)", "directory": "a directory", "device": "a character device"}[kind]
    path = _rows(tmp_path / "prompts.jsonl", [{"prompt": "q", "answer": "1"},
                                              {"prompt": "q", "answer": "1", "images": [str(image)]}])
    recipe = Recipe.model_validate({"name": "fifo", "runs_dir": str(tmp_path / "runs"),
                                    "data": {"kind": "files", "prompts": str(path)},
                                    "stages": [{"kind": "rl", "steps": 1}]})
    with pytest.raises(ValueError, match=rf"{path} row 2 images\[0\]: image {image} is {what}, not a regular "
                                         rf"file; give the path of an image file"):
        prepare_data(recipe, Console(file=io.StringIO()))


def test_image_bytes_or_files_that_are_no_image_name_the_file_row_and_image(tmp_path):
    from posttrain.data_files import check_rows, save_images

    source = tmp_path / "eval.parquet"
    png = _png()
    rows = [{"prompt": "q", "images": [{"bytes": png, "path": None}, {"bytes": b"not an image", "path": None}]}]
    with pytest.raises(ValueError, match=rf"{source} row 1 images\[1\]: its 12 bytes are not a decodable image "
                                         rf"\(cannot identify image file .*\); fix or drop the row's image"):
        save_images(rows, tmp_path / "images", "eval", source)
    truncated = [{"prompt": "q", "images": [{"bytes": png[:-20], "path": None}]}]
    with pytest.raises(ValueError, match=rf"{source} row 1 images\[0\]: its {len(png) - 20} bytes are not a "
                                         rf"decodable image"):
        save_images(truncated, tmp_path / "images", "eval", source)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    path = _rows(tmp_path / "sft.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": str(text)}, {"type": "text", "text": "what?"}]},
        {"role": "assistant", "content": "a cat"}]}])
    with pytest.raises(ValueError, match=rf"{path} row 1 messages\[0\].content\[0\].image: image {text} is not a "
                                         rf"readable image \(cannot identify image file"):
        check_rows([json.loads(path.read_text())], path, "sft")


def _png() -> bytes:
    """A 5x3 red PNG, encoded."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()
