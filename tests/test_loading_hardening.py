"""hf:DIR folders whose weights do not match config.json are refused (no half-random models), quietly
(transformers' load report silenced), and config sizes that would build for hours are refused."""

from __future__ import annotations

import json

import pytest
import torch

from fna_deploy.loading import ModelLoadError, load_model

transformers = pytest.importorskip("transformers")


def _folder(tmp_path, cls=None):
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8)
    model = (cls or transformers.ViTForImageClassification)(config).eval()
    folder = tmp_path / "vit"
    model.save_pretrained(folder)
    return folder


def _rewrite_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def test_missing_and_unexpected_tensors_are_refused_quietly(tmp_path, capfd):
    folder = _folder(tmp_path)
    assert load_model(f"hf:{folder}") is not None  # complete: loads
    _rewrite_weights(folder, lambda s: [s.pop(k) for k in [k for k in s if ".1." in k]])
    capfd.readouterr()
    with pytest.raises(ModelLoadError, match=r"weights do not match config.json for ViTForImageClassification: \d+ missing") as info:
        load_model(f"hf:{folder}")
    assert "part of the model would be random" in str(info.value)
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.err and "MISSING" not in captured.err and "Loading weights" not in captured.err
    _rewrite_weights(folder, lambda s: s.update({"extra.weight": torch.zeros(3)}))
    with pytest.raises(ModelLoadError, match="unexpected"):
        load_model(f"hf:{folder}")


def test_a_base_model_folder_named_as_a_classifier_is_refused(tmp_path):
    folder = _folder(tmp_path, transformers.ViTModel)  # backbone weights only
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["ViTForImageClassification"]  # the head would be random
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(f"hf:{folder}")


@pytest.mark.parametrize("key, value, message", [
    ("num_hidden_layers", 1e7, "num_hidden_layers is 10000000.0|is not a readable model config"),
    ("num_hidden_layers", 10**7, "num_hidden_layers is 10000000"),
    ("hidden_size", -32, "hidden_size is -32"),
    ("patch_size", 0, "patch_size is 0"),
])
def test_config_sizes_are_bounded(tmp_path, key, value, message):
    folder = _folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=message):
        load_model(f"hf:{folder}")


def test_the_parameter_estimate_is_bounded(tmp_path):
    folder = _folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(num_hidden_layers=256, hidden_size=32768, num_attention_heads=256)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="parameters, more than"):
        load_model(f"hf:{folder}")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _zip(path, files):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_a_legacy_pt2_whose_json_entry_is_a_pickle_is_caught_by_the_pre_scan(tmp_path):
    import io

    from fna_deploy.loading import pt2_code_entries

    marker = tmp_path / "code_ran"
    blob = io.BytesIO()
    torch.save({"w": _Payload(marker)}, blob)
    path = _zip(tmp_path / "legacy.pt2", {"legacy/version": "1", "legacy/serialized_exported_program.json": "{}",
                                          "legacy/serialized_state_dict.json": blob.getvalue()})
    assert pt2_code_entries(path) == ["legacy/serialized_state_dict.json (pickled object)"]
    with pytest.raises(ModelLoadError, match="carries entries that run code"):
        load_model(path)
    assert not marker.exists()
    clean = _zip(tmp_path / "clean.pt2", {"legacy/version": "1", "legacy/serialized_state_dict.json": "{}"})
    assert pt2_code_entries(clean) == []  # real JSON: fine


def test_opaque_objects_meet_a_second_guard(tmp_path):
    """Opaque and custom objects are unpickled by pickle.loads / the TorchScript unpickler, not torch.load:
    the guard behind the pre-scan covers them too, and puts them back afterwards."""
    import pickle

    from torch.export.pt2_archive import _package

    from fna_deploy.loading import _no_unpickling

    marker = tmp_path / "code_ran"
    with _no_unpickling():
        with pytest.raises(ModelLoadError, match="pickled object"):
            _package.pickle.loads(pickle.dumps(_Payload(marker)))
        with pytest.raises(ModelLoadError):
            torch._C._pickle_load_obj(b"")
        assert _package.pickle.HIGHEST_PROTOCOL == pickle.HIGHEST_PROTOCOL  # the rest of the module is intact
    assert not marker.exists()
    assert _package.pickle is pickle and _package.pickle.loads(pickle.dumps([1])) == [1]


def test_damaged_pt2_errors_print_no_torch_traceback(tmp_path, capfd):
    from click.testing import CliRunner

    from fna_deploy.cli import cli

    for name, files in (("legacy.pt2", {"legacy/version": "1", "legacy/serialized_exported_program.json": "{}"}),
                        ("trav.pt2", {"m/../../evil.txt": "x", "m/version": "1"})):
        path = _zip(tmp_path / name, files)
        capfd.readouterr()
        result = CliRunner().invoke(cli, ["export", str(path), "-q", "-o", str(tmp_path / "o.onnx")])
        err = capfd.readouterr().err + result.stderr
        assert result.exit_code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {str(path)!r} is not a readable torch.export archive ("), lines
        assert "warnings above" not in lines[0] and "Traceback" not in err
