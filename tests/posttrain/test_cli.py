"""Exit codes and what `posttrain` prints when a command fails."""

from pathlib import Path

from posttrain.cli import main
from posttrain.commands import recipes


def test_a_recipe_error_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: t\nstages:\n  - kind: reward_model\n    epochz: 2\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: stages.0.epochz: unknown key 'epochz'; did you mean 'epochs'?" in err
    assert "traceback" not in err.lower()


def test_an_unexpected_error_keeps_its_traceback(monkeypatch, capsys):
    """A TypeError from deep inside a command may be a bug: its one line names a file holding the traceback."""

    def deep_inside_training(batch):
        return batch + 1

    def crashing_command(args):
        return deep_inside_training("rows")

    monkeypatch.setattr(recipes, "validate_command", crashing_command)
    assert main(["validate", "tiny/rl_math"]) == 2
    first, second = capsys.readouterr().err.splitlines()
    assert first == 'posttrain validate: error: can only concatenate str (not "int") to str'
    saved = Path(second.removeprefix("  (full traceback in ").removesuffix(")"))
    try:
        trace = saved.read_text()
        assert trace.startswith("Traceback") and "in deep_inside_training" in trace and "return batch + 1" in trace
    finally:
        saved.unlink()
