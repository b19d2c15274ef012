"""The compiled C++ side of the plugin contract: libfna reports the field table it was built with
(fna_contract_json, from the generated fna_contract.h) and the fields its plugins serialise; its
attribute checks (the creators' validation) agree with the table's bounds and choices."""

from __future__ import annotations

import pytest

from fna_deploy import contract


def test_compiled_field_table_matches_the_contract(lib):
    compiled = lib.contract()
    assert compiled["plugin_namespace"] == contract.PLUGIN_NAMESPACE and compiled["plugin_version"] == contract.PLUGIN_VERSION
    assert [o["name"] for o in compiled["ops"]] == [o.name for o in contract.OPS]
    for got, spec in zip(compiled["ops"], contract.OPS):
        fields = [(f["name"], f["type"], f["required"], f["default"], f["minimum"], f["maximum"], f["choices"]) for f in got["fields"]]
        assert fields == [(f.name, f.type, f.required, f.default, f.minimum, f.maximum, "|".join(f.choices)) for f in spec.fields]
        # what the plugin serialises (fna_logic's to_attr_map) is exactly the declared fields, same types
        assert sorted((f["name"], f["type"]) for f in got["state_fields"]) == sorted((f.name, f.type) for f in spec.fields)


LANDMARK_DEFAULTS = {"num_landmarks": 8, "num_prefix": 0, "massive_ratio": 0.0, "artifact_ratio": 0.0, "method": "fps"}
NYSTROM_DEFAULTS = {"scale": 0.0, "pinv_iters": 6}


def _cases():
    for spec in contract.OPS:
        for f in spec.fields:
            if f.minimum is not None:
                step = 1 if f.type == "int32" else 1e-3
                yield spec.name, f.name, f.minimum, True
                yield spec.name, f.name, f.minimum - step, False
            if f.maximum is not None:
                yield spec.name, f.name, f.maximum, True
                yield spec.name, f.name, f.maximum + 1, False
            for choice in f.choices:
                yield spec.name, f.name, choice, True
            if f.choices:
                yield spec.name, f.name, "not-a-choice", False


@pytest.mark.parametrize("op_name, field, value, valid", list(_cases()))
def test_cpp_validation_agrees_with_the_table(lib, op_name, field, value, valid):
    spec = contract.op(op_name)
    assert (spec.field(field).problem(value) is None) == valid  # the table's own verdict
    if op_name == contract.LANDMARKS:
        call = lambda: lib.check_landmark_attrs(**{**LANDMARK_DEFAULTS, field: value})  # noqa: E731
    else:
        call = lambda: lib.check_nystrom_attrs(**{**NYSTROM_DEFAULTS, field: value})  # noqa: E731
    if valid:
        call()
    else:
        with pytest.raises(ValueError, match=field):
            call()
