"""The shipped mask classifier in int8 (onnxruntime's static quantization): an experiment, not shipped.

    python benchmarks/quantize_classifier.py ../shared/datasets/mask-scenes --out /tmp/mask_classifier.int8.onnx
    python benchmarks/speed.py --classifier /tmp/mask_classifier.int8.onnx            # speed, side by side
    maskwatch evaluate --scenes ../shared/datasets/mask-scenes --split val --min-face 16 \\
        --classifier /tmp/mask_classifier.int8.onnx                                     # real scenes
    python benchmarks/paper_protocol_by_cut.py --classifier /tmp/mask_classifier.int8.onnx   # the paper's protocol

Weights per channel and activations are quantized to 8 bits (QDQ), the activation ranges calibrated on face
crops cut from the annotated boxes of the scene set's *train* split, as the pipeline cuts them (the
classifier's crop margin and input size). The file keeps the shipped file's metadata (labels, operating
point, normalisation), so every command above takes it as it takes the shipped one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from maskwatch.classifier.onnx_classifier import MaskClassifier
from maskwatch.crops import face_crop
from maskwatch.images import load_image
from maskwatch.voc import find_scenes, read_voc


class Crops(CalibrationDataReader):
    """The model's input for each calibration crop, one at a time."""

    def __init__(self, classifier: MaskClassifier, crops: list[np.ndarray]) -> None:
        self.batches = iter([{classifier.input_name: classifier.preprocess([crop])} for crop in crops])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def calibration_crops(scenes: Path, classifier: MaskClassifier, count: int) -> list[np.ndarray]:
    """``count`` face crops spread evenly over the annotated boxes of the train split."""
    pairs, _ = find_scenes(scenes, "train")
    boxes = [(image, box) for image, xml in pairs for _name, box, _difficult in read_voc(xml)[1]]
    chosen = [boxes[i] for i in np.linspace(0, len(boxes) - 1, min(count, len(boxes))).astype(int)]
    return [face_crop(load_image(image), box, classifier.input_size, classifier.crop_margin)
            for image, box in chosen]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenes", type=Path, help="a VOC scene set with a train split (calibration crops)")
    parser.add_argument("--out", type=Path, required=True, help="the int8 ONNX file to write")
    parser.add_argument("--classifier", help="the float model (default: the shipped one)")
    parser.add_argument("--calibration", type=int, default=256, help="calibration crops")
    parser.add_argument("--keep-float", nargs="*", default=[], metavar="NODE",
                        help="node names (or name prefixes) left in float, e.g. /head/ for the dense head")
    parser.add_argument("--method", choices=[m.name for m in CalibrationMethod], default="MinMax",
                        help="how the activation ranges are chosen from the calibration crops")
    args = parser.parse_args()
    classifier = MaskClassifier(args.classifier)
    crops = calibration_crops(args.scenes, classifier, args.calibration)
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(classifier.path), str(prepared), skip_symbolic_shape=True)
        names = [node.name for node in onnx.load(str(prepared)).graph.node]
        kept = [name for name in names if any(name.startswith(prefix) for prefix in args.keep_float)]
        quantize_static(str(prepared), str(args.out), Crops(classifier, crops), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod[args.method], nodes_to_exclude=kept)
    model = onnx.load(str(args.out))
    del model.metadata_props[:]
    model.metadata_props.extend(onnx.load(str(classifier.path), load_external_data=False).metadata_props)
    onnx.save(model, str(args.out))
    print(f"{args.out}: int8, calibrated ({args.method}) on {len(crops)} train crops of {args.scenes}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
