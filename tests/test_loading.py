"""load_model: every spec form, checkpoints that reopen with the same outputs, and every refusal."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import fna_deploy as fd
from fna_deploy import ModelLoadError, load_model

from .conftest import tiny_timm

X = torch.randn(1, 3, 64, 64)


def test_timm_random_init_at_resolution():
    model = load_model("timm:vit_tiny_patch16_224", img_size=64)
    assert not model.training
    assert fd.model_info(model).num_tokens() == 17
    assert model(X).shape == (1, 1000)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_timm_checkpoint_round_trip(tmp_path, suffix):
    source = tiny_timm(img_size=64)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # a wrapped state dict, as training scripts write
    loaded = load_model("timm:vit_tiny_patch16_224", checkpoint=path, img_size=64)
    with torch.no_grad():
        assert torch.equal(loaded(X), source(X))


def test_checkpoint_resized_to_another_resolution(tmp_path):
    source = tiny_timm(img_size=64)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = load_model("timm:vit_tiny_patch16_224", checkpoint=path, img_size=96)
    assert loaded.pos_embed.shape[1] == 1 + 36
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_hf_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    source = transformers.ViTForImageClassification(config).eval()
    source.save_pretrained(tmp_path / "vit")
    model = load_model(f"hf:{tmp_path / 'vit'}")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(pixel_values=x).logits)
    assert fd.model_info(model).family == "hf"
    bigger = load_model(f"hf:{tmp_path / 'vit'}", img_size=48)  # position embeddings interpolated
    assert fd.model_info(bigger).num_tokens() == 1 + 36
    with torch.no_grad():
        assert bigger(torch.randn(1, 3, 48, 48)).shape == (1, 2)


def test_pt2_archive(tmp_path):
    model = fd.patch(tiny_timm(depth=2), fd.FNAConfig(num_landmarks=8))
    ep = torch.export.export(model, (X,))
    torch.export.save(ep, tmp_path / "m.pt2")
    loaded = load_model(tmp_path / "m.pt2")
    with torch.no_grad():
        assert torch.allclose(loaded(X), model(X), atol=1e-6)


def test_pickled_module_needs_allow_pickle(tmp_path):
    model = tiny_timm(depth=1)
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(ModelLoadError, match="unpickling runs whatever code the file carries; .*--allow-pickle"):
        load_model(tmp_path / "whole.pt")
    loaded = load_model(tmp_path / "whole.pt", allow_pickle=True)
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("timm:not_a_model_xyz", {}, "timm has no model named 'not_a_model_xyz'"),
        ("timm:", {}, "no model name"),
        ("resnet50", {}, "cannot tell what model 'resnet50' is"),
        ("missing.pt2", {}, "'missing.pt2' does not exist"),
        ("hf:", {}, "no directory"),
        ("timm:vit_tiny_patch16_224", {"img_size": -3}, "img_size must be a positive int"),
        ("timm:vit_tiny_patch16_224", {"img_size": 8}, "resolution 8 px is smaller than one 16 px patch"),
        ("timm:vit_tiny_patch16_224", {"checkpoint": "nope.safetensors"}, "checkpoint 'nope.safetensors' does not exist"),
    ],
)
def test_bad_specs(spec, kwargs, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(spec, **kwargs)


def test_hf_dir_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="not a Hugging Face model directory"):
        load_model(f"hf:{tmp_path}")


def test_state_dict_files_need_an_architecture(tmp_path):
    state = {k: v.contiguous() for k, v in tiny_timm(depth=1).state_dict().items()}
    torch.save(state, tmp_path / "sd.pt")
    save_file(state, str(tmp_path / "sd.safetensors"))
    for name in ("sd.pt", "sd.safetensors"):
        with pytest.raises(ModelLoadError, match="holds weights only, not a model; name the architecture: --arch timm:NAME"):
            load_model(tmp_path / name)


def test_mismatched_checkpoint(tmp_path):
    state = {k: v.contiguous() for k, v in tiny_timm(depth=1).state_dict().items()}
    save_file(state, str(tmp_path / "one_block.safetensors"))
    with pytest.raises(ModelLoadError, match="does not match VisionTransformer: .* missing"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=tmp_path / "one_block.safetensors", img_size=64)
    save_file({"a": torch.zeros(2)}, str(tmp_path / "junk.safetensors"))
    with pytest.raises(ModelLoadError, match="does not"):
        load_model("timm:vit_small_patch16_224", checkpoint=tmp_path / "junk.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a file format")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=tmp_path / "garbage.safetensors")


def test_pickled_checkpoint_is_not_unpickled(tmp_path):
    torch.save(tiny_timm(depth=1), tmp_path / "module.pt")
    with pytest.raises(ModelLoadError, match="not a plain state dict that loads with weights_only=True"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=tmp_path / "module.pt")


class _Payload:
    """Unpickling this creates a file: the stand-in for code a hostile archive would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tamper_pt2(source, target, marker, entry: str):
    """A copy of a real .pt2 whose ``entry`` ("weights" or "sample_inputs") is a code-running pickle."""
    import io
    import json
    import zipfile

    blob = io.BytesIO()
    torch.save(_Payload(marker), blob)
    with zipfile.ZipFile(source) as src:
        files = {info.filename: src.read(info) for info in src.infolist()}
    for name, data in list(files.items()):
        if entry == "weights" and name.endswith("weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            files[name] = json.dumps(config).encode()
            files[name.rsplit("/", 1)[0] + "/" + first["path_name"]] = blob.getvalue()
        if entry == "sample_inputs" and "/sample_inputs/" in name:
            files[name] = blob.getvalue()
    with zipfile.ZipFile(target, "w") as dst:
        for name, data in files.items():
            dst.writestr(name, data)
    return target


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.proj(x)


@pytest.mark.parametrize("entry", ["weights", "sample_inputs"])
def test_pt2_with_a_pickled_entry_runs_no_code(tmp_path, entry):
    import warnings

    torch.export.save(torch.export.export(_Small(), (torch.randn(1, 4),)), tmp_path / "clean.pt2")
    marker = tmp_path / "code_ran"
    bad = _tamper_pt2(tmp_path / "clean.pt2", tmp_path / "bad.pt2", marker, entry)
    assert fd.loading.pt2_code_entries(tmp_path / "clean.pt2") == []
    assert load_model(tmp_path / "clean.pt2")(torch.ones(1, 4)).shape == (1, 2)  # pickle-free: still loads
    assert fd.loading.pt2_code_entries(bad)
    with pytest.raises(ModelLoadError, match="run code when loaded .*--allow-pickle"):
        load_model(bad)
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match="asks to unpickle code"):  # the guard alone refuses too
        _guard_only(bad)
    assert not marker.exists()
    # with --allow-pickle the user vouched for the file: the payload runs (what the refusal prevented)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_model(bad, allow_pickle=True)
        except ModelLoadError:
            pass  # the payload is no tensor: the model itself cannot be built
    assert marker.exists()


def _guard_only(path):
    from fna_deploy.loading import _no_unpickling, _UnpicklingRefused

    try:
        with _no_unpickling():
            torch.export.load(str(path))
    except _UnpicklingRefused as exc:
        raise ModelLoadError(str(exc)) from None


def test_garbage_files_are_one_sentence(tmp_path):
    for name in ("random.pt", "random.pt2"):
        (tmp_path / name).write_bytes(bytes(range(256)) * 8)
        for allow in (False, True):
            with pytest.raises(ModelLoadError, match="random.pt"):
                load_model(tmp_path / name, allow_pickle=allow)


def test_hf_folders_that_cannot_load(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    source = transformers.ViTModel(config).eval()
    folder = tmp_path / "vit"
    source.save_pretrained(folder)
    (folder / "config.json").write_text((folder / "config.json").read_text()[:40])  # truncated
    with pytest.raises(ModelLoadError, match="config.json' is not a readable model config"):
        load_model(f"hf:{folder}")
    source.save_pretrained(folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match="has a config.json but no weights"):
        load_model(f"hf:{folder}")
    # .bin weights: plain tensors load; a pickle that runs code is refused before transformers sees it
    torch.save(source.state_dict(), folder / "pytorch_model.bin")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(f"hf:{folder}")(x), source(pixel_values=x).last_hidden_state)
    marker = tmp_path / "code_ran"
    torch.save({"w": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="does not load with weights_only=True"):
        load_model(f"hf:{folder}")
    assert not marker.exists()


def test_finished_models_accept_their_own_resolution_only(tmp_path):
    model = tiny_timm(img_size=64, depth=1)
    torch.save(model, tmp_path / "whole.pt")
    ep = torch.export.export(model.eval(), (X,))
    torch.export.save(ep, tmp_path / "m.pt2")
    for name, kwargs in (("whole.pt", {"allow_pickle": True}), ("m.pt2", {})):
        path = tmp_path / name
        same = load_model(path, img_size=64, **kwargs)  # its own resolution: accepted
        assert same(X).shape == (1, 1000)
        with pytest.raises(ModelLoadError) as info:
            load_model(path, img_size=96, **kwargs)
        message = str(info.value)
        assert f"'{path}' is a finished model at 64x64 px and cannot run at 96 px; drop --resolution (or give 64)" == message
