"""Messages name the input they are about: a broken config.pbtxt names its model and file, an empty
artifact names the file (not "a model config needs inputs and outputs")."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fna_deploy.cli import cli
from fna_deploy.triton import RepositoryOptions, write_repository

from .conftest import tiny_onnx

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")


@pytest.mark.parametrize("content, needle", [(b'name: "vit" backend: python" {{', "does not parse as a Triton ModelConfig"),
                                             (b"\xff\xfe\x00", "is not text")])
def test_serve_names_the_model_with_a_broken_config(tmp_path, content, needle):
    report = write_repository(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "repo", RepositoryOptions(name="vit", backend="python"))
    config = tmp_path / "repo" / "vit" / "config.pbtxt"
    config.write_bytes(content)
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "repo"), "--http-port", "1"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: model 'vit': {str(config)!r} {needle}"), lines
    assert report.name == "vit"


def test_triton_on_an_empty_file_names_it(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    result = CliRunner().invoke(cli, ["triton", str(empty), "-o", str(tmp_path / "repo")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {str(empty)!r} holds no ONNX graph; give a .onnx written by 'fna-deploy export'"
    assert not (tmp_path / "repo").exists()


def test_infer_image_messages_name_the_users_file(tmp_path):
    import shutil

    from fna_deploy.commands.infer import _images

    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    fake = tmp_path / "fake.png"
    shutil.copy(text, fake)
    cases = [(str(text), f"--image {str(text)!r}: not an image file (.jpg"),
             ("/dev/zero", "--image '/dev/zero' is not a regular file or folder"),
             (str(fake), f"--image {str(fake)!r}: cannot read image {str(fake)!r}")]
    for image, message in cases:
        with pytest.raises(ValueError) as info:
            _images(image, [1, 3, 32, 32], None, 0)
        assert str(info.value).startswith(message), str(info.value)
        assert "/tmp/tmp" not in str(info.value).replace(str(tmp_path), "")  # no temporary folder named


def test_infer_image_path_is_checked_before_the_recorded_preprocessing_reads_it():
    """Exports record a preprocessing recipe, and infer then reads --image by it: a device is still
    named as one there, not reported missing."""
    import json

    import timm

    from fna_deploy.commands.infer import _encoded_request, _images
    from fna_deploy.images import data_config

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32).eval()
    recipe = data_config(model, (32, 32), channels=3)  # what export records
    with pytest.raises(ValueError, match=r"^--image '/dev/zero' is not a regular file or folder"):
        _images("/dev/zero", [1, 3, 32, 32], None, 0, recipe)

    class Client:  # an ensemble whose last step records the recipe (the server's answer to model_config)
        def model_config(self, name):
            return {"name": name, "parameters": {"fna_preprocess": {"string_value": json.dumps(recipe)}}}

    ensemble = {"name": "m_images", "ensemble_scheduling": {"step": [{"model_name": "m_preprocess"}, {"model_name": "m"}]}}
    with pytest.raises(ValueError, match=r"^--image '/dev/zero' is not a regular file or folder"):
        _encoded_request(Client(), ensemble, "/dev/zero", 1, None)
