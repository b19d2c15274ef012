"""FNAConfig validation, layer specs and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from fna_deploy import FNAConfig, parse_layers


def test_defaults():
    cfg = FNAConfig()
    assert cfg.num_landmarks == 64 and cfg.method == "fps" and cfg.features == "q"
    assert cfg.pinv_iters == 6 and cfg.num_prefix is None and not cfg.resample_every_layer
    assert cfg.resolve_layers(12) == list(range(6, 12))
    assert cfg.resolve_layers(5) == [2, 3, 4]
    # one default set (issue 21): the paper's attention sinks guaranteed, artifact masking off
    assert (cfg.massive_ratio, cfg.artifact_ratio) == (10.0, 0.0)
    assert cfg.uses_scores and not FNAConfig(massive_ratio=0).uses_scores


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", list(range(12))),
        ("2-11", list(range(2, 12))),
        ("0-2,5", [0, 1, 2, 5]),
        (" 7 ", [7]),
        ("3,1,3", [1, 3]),
        ([4, 2], [2, 4]),
        ((0, 11), [0, 11]),
    ],
)
def test_layer_specs(spec, expected):
    assert FNAConfig(layers=spec).resolve_layers(12) == expected
    assert parse_layers(spec, 12) == expected


@pytest.mark.parametrize("spec", ["0-12", "12", [0, 12]])
def test_layers_out_of_range(spec):
    with pytest.raises(ValueError, match="out of range; this model has 12 blocks"):
        FNAConfig(layers=spec).resolve_layers(12)


@pytest.mark.parametrize("spec, message", [("a-b", "cannot parse"), ("5-2", "runs backwards"), ([], "empty"), ([1.5], "integers"), ([-1], ">= 0"), (3, "expected 'all'")])
def test_bad_layer_syntax(spec, message):
    with pytest.raises(ValueError, match=message):
        FNAConfig(layers=spec)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_landmarks", 0),
        ("num_landmarks", 2.0),
        ("num_landmarks", True),
        ("pinv_iters", -1),
        ("method", "random"),
        ("features", "x"),
        ("resample_every_layer", "yes"),
        ("num_prefix", -1),
        ("num_prefix", 100),
        ("massive_ratio", -1.0),
        ("massive_ratio", 0.5),
        ("massive_ratio", float("inf")),
        ("artifact_ratio", "2"),
        ("artifact_ratio", 0.9),
        ("scale", 0.0),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        FNAConfig(**{field: value})


def test_json_round_trip():
    cfg = FNAConfig(num_landmarks=128, layers="2-11", method="grid", features="k", resample_every_layer=True,
                    pinv_iters=8, num_prefix=5, massive_ratio=20.0, artifact_ratio=10.0, scale=0.125)
    again = FNAConfig.from_json(cfg.to_json())
    assert again == cfg
    assert FNAConfig.from_dict(json.loads(json.dumps(FNAConfig(layers=[1, 2]).to_dict()))).layers == [1, 2]


def test_from_dict_rejects_unknown_fields_and_bad_json():
    with pytest.raises(ValueError, match="unknown field\\(s\\) landmarks"):
        FNAConfig.from_dict({"landmarks": 3})
    with pytest.raises(ValueError, match="not valid JSON"):
        FNAConfig.from_json("{")
    with pytest.raises(ValueError, match="num_landmarks"):
        FNAConfig.from_json('{"num_landmarks": -4}')
