import json
import subprocess
import sys

from keye_vl import KeyeForConditionalGeneration, KeyeVLProcessor
from posttrain.cli import main


def test_model_init_writes_a_loadable_directory(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["model", "init", "--preset", "keye-tiny", str(out)]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (out / name).exists(), name
    model = KeyeForConditionalGeneration.from_pretrained(str(out))
    processor = KeyeVLProcessor.from_pretrained(out)
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert "1,305,024" in capsys.readouterr().out


def test_model_info_prints_counts_by_part(tiny_model_dir, capsys):
    assert main(["model", "info", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    for part in ("visual", "mlp_AR", "model", "lm_head", "total"):
        assert part in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["decoder"]["mrope_section"] == [4, 6, 6]


def test_8b_init_without_tokenizer_is_a_clear_error(tmp_path, capsys):
    assert main(["model", "init", "--preset", "keye-vl-8b", str(tmp_path / "big")]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()


def test_info_on_a_missing_directory(tmp_path, capsys):
    assert main(["model", "info", str(tmp_path / "nothing")]) == 2
    assert "posttrain model init" in capsys.readouterr().err


def test_console_script_runs_the_demo(tmp_path):
    result = subprocess.run([sys.executable, "-m", "posttrain.cli", "demo", "--dir", str(tmp_path / "demo"),
                             "--max-new-tokens", "4"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for mode in ("no_think", "think", "auto_think", "agentic"):
        assert f"{mode}: 4 tokens" in result.stdout


def test_cli_preset_names_match_the_presets():
    from keye_vl.presets import PRESETS
    from posttrain.commands.model import PRESETS as CLI_PRESETS

    assert sorted(CLI_PRESETS) == sorted(PRESETS)
