import json

from PIL import Image

from posttrain.cli import main


def test_generate_prints_one_json_line_per_sample(tmp_path, tiny_model_dir, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (56, 56), "red").save(image)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "sum", "prompt": "What is 2 + 3?"}) + "\n\n"
                       + json.dumps({"prompt": "Color?", "images": [str(image)], "mode": "no_think"}) + "\n")
    assert main(["generate", str(tiny_model_dir), "--prompts", str(prompts), "--mode", "think", "-n", "2",
                 "--max-tokens", "5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["sample"], r["mode"]) for r in rows] == [
        ("sum", 0, "think"), ("sum", 1, "think"), ("2", 0, "no_think"), ("2", 1, "no_think")]
    assert all(r["num_tokens"] == 5 and r["finish_reason"] == "length" for r in rows)
    assert {"analysis", "think", "answer", "boxed", "text", "error"} <= set(rows[0])


def test_bad_prompt_rows_name_the_line(tmp_path, tiny_model_dir, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"question": "no prompt key"}\n')
    assert main(["generate", str(tiny_model_dir), "--prompts", str(prompts)]) == 2
    assert "prompts.jsonl:2: a prompt row needs 'prompt'" in capsys.readouterr().err
    prompts.write_text('{"prompt": "ok"\n')
    assert main(["generate", str(tiny_model_dir), "--prompts", str(prompts)]) == 2
    assert "prompts.jsonl:1: not valid JSON" in capsys.readouterr().err
