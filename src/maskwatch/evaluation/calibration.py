"""Write a copy of a classifier whose graph divides the logits by a fitted temperature.

Why in the graph and not as metadata: every consumer (``detect``, ``watch``, ``serve``,
other runtimes reading the ONNX file) then gets calibrated probabilities with no code
change, and an old maskwatch cannot silently ignore a metadata field it does not know.
The exported models end in ``Softmax(logits)``; the copy becomes ``Softmax(logits / T)``,
which keeps every argmax (accuracy is unchanged) and only moves the probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maskwatch.classifier.onnx_classifier import METADATA_KEY

CALIBRATED_NAME = "mask_classifier.calibrated.onnx"


def write_calibrated_model(source: Path, target: Path, temperature: float, details: dict) -> Path:
    """Copy ``source`` to ``target`` with the temperature inside the graph and noted in the metadata."""
    import onnx  # the train extra; only this optional step needs it
    from onnx import helper, numpy_helper

    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    model = onnx.load(str(source))
    graph = model.graph
    output = graph.output[0].name
    index, producer = next((i, n) for i, n in enumerate(graph.node) if output in n.output)
    t_name = _unique(graph, "maskwatch_temperature")
    graph.initializer.append(numpy_helper.from_array(np.array(temperature, np.float32), t_name))
    if producer.op_type == "Softmax":
        scaled = _unique(graph, "maskwatch_scaled_logits")
        graph.node.insert(index, helper.make_node("Div", [producer.input[0], t_name], [scaled],
                                                  name=_unique(graph, "maskwatch_temperature_div")))
        producer.input[0] = scaled
    else:
        _append_log_softmax(graph, producer, output, t_name)
    _update_metadata(model, temperature, details)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def _append_log_softmax(graph, producer, output: str, t_name: str) -> None:
    """For a graph that does not end in Softmax: probabilities -> log -> / T -> Softmax."""
    from onnx import helper, numpy_helper

    raw, floor = _unique(graph, "maskwatch_uncalibrated"), _unique(graph, "maskwatch_floor")
    producer.output[list(producer.output).index(output)] = raw
    # log(0) would be -inf for a class with underflowed probability: floor it first.
    graph.initializer.append(numpy_helper.from_array(np.array(1e-12, np.float32), floor))
    names = [_unique(graph, f"maskwatch_{n}") for n in ("clipped", "log", "scaled")]
    graph.node.extend([
        helper.make_node("Max", [raw, floor], [names[0]]),
        helper.make_node("Log", [names[0]], [names[1]]),
        helper.make_node("Div", [names[1], t_name], [names[2]]),
        helper.make_node("Softmax", [names[2]], [output], axis=-1),
    ])


def _update_metadata(model, temperature: float, details: dict) -> None:
    entry = next((p for p in model.metadata_props if p.key == METADATA_KEY), None)
    if entry is None:
        raise ValueError("this ONNX file has no maskwatch metadata")
    metadata = json.loads(entry.value)
    metadata["calibration"] = {"temperature": temperature, "applied": "in the graph: Softmax(logits / T)",
                               **details}
    entry.value = json.dumps(metadata, sort_keys=True)


def _unique(graph, base: str) -> str:
    taken = {n for node in graph.node for n in (*node.input, *node.output, node.name)}
    taken |= {t.name for t in graph.initializer}
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name
