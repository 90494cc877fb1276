"""The JSON contract has one source, ``results.py``: the web API's documented shapes must match it."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.results import FaceResult, ImageResult

pytest.importorskip("fastapi", reason="the web API needs the web extra")

from maskwatch.web.app import DetectionOut, FaceOut  # noqa: E402


def sample_result() -> ImageResult:
    face = FaceResult((1, 2, 30, 40), 0.9, np.zeros((5, 2)), "incorrect_mask", 0.1,
                      {"incorrect_mask": 0.8, "with_mask": 0.1, "without_mask": 0.1})
    return ImageResult("a.jpg", 64, 48, [face])


def test_openapi_shapes_are_the_results_contract() -> None:
    as_dict = sample_result().to_dict()
    assert set(DetectionOut.model_fields) == set(as_dict)
    assert set(FaceOut.model_fields) == set(as_dict["faces"][0])
    # And the contract validates against the documented models, field by field.
    DetectionOut.model_validate(as_dict)


def test_face_results_compare_by_value() -> None:
    assert sample_result().faces[0] == sample_result().faces[0]
    other = sample_result().faces[0]
    other.label = "with_mask"
    assert other != sample_result().faces[0]
