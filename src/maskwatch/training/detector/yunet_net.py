"""YuNet as a trainable PyTorch module, read from (and written back into) OpenCV Zoo's ONNX file.

The 2023mar file is a small graph (53 convolutions with batch norm already folded in, ReLU, 2x2 max
pooling, nearest 2x upsampling and two additions for the feature pyramid, then one head per stride 8/16/32).
This module runs that graph node by node with ``nn.Conv2d`` layers holding the file's weights, so nothing
about the architecture is re-typed by hand and nothing can drift from the file.

Why not ``onnx2torch``: it imports torchvision, which does not import beside the CPU build of torch this
project installs (measured: ``ModuleNotFoundError: torchvision`` at import). The op set here is six ops.

Export goes the other way: the trained weights replace the initializers of a copy of the original file, so
the exported model has the stock file's graph, input and output names and meaning, and
``cv2.FaceDetectorYN`` loads it unchanged. Only the input's height and width become free (the stock file fixes
640x640), so that onnxruntime runs it at any size too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

HEADS = ("cls", "obj", "bbox", "kps")
# The graph's supported operations; anything else means a different model than YuNet 2023mar.
SUPPORTED_OPS = {"Conv", "Relu", "MaxPool", "Resize", "Add", "Transpose", "Reshape", "Sigmoid"}


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class YuNetNet(nn.Module):
    """YuNet's graph with its weights as parameters.

    ``forward`` takes a float BGR batch (N, 3, H, W), pixel values 0-255 as OpenCV feeds it, H and W multiples
    of 32, and returns ``{"cls": [..], "obj": [..], "bbox": [..], "kps": [..]}``: one (N, H*W/stride², C)
    tensor per stride. ``cls`` and ``obj`` are logits (the file applies a sigmoid; training wants logits).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unsupported = {node.op_type for node in graph.node} - SUPPORTED_OPS
        if unsupported:
            raise ValueError(f"not a YuNet 2023mar graph: unsupported operations {sorted(unsupported)}")
        initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.input_name = graph.input[0].name
        self.output_names = [output.name for output in graph.output]
        self.nodes = list(graph.node)
        self.convs = nn.ModuleDict()
        # Which initializer each conv parameter came from: export writes the trained values back there.
        self.sources: dict[str, tuple[str, str | None]] = {}
        for index, node in enumerate(self.nodes):
            if node.op_type != "Conv":
                continue
            attrs = _attributes(node)
            weight = initializers[node.input[1]]
            bias = initializers[node.input[2]] if len(node.input) > 2 else None
            pads = attrs.get("pads", [0, 0, 0, 0])
            if pads[:2] != pads[2:]:
                raise ValueError(f"asymmetric padding in {node.name or index}: not supported")
            conv = nn.Conv2d(
                in_channels=weight.shape[1] * attrs.get("group", 1), out_channels=weight.shape[0],
                kernel_size=tuple(weight.shape[2:]), stride=tuple(attrs.get("strides", [1, 1])),
                padding=tuple(pads[:2]), dilation=tuple(attrs.get("dilations", [1, 1])),
                groups=attrs.get("group", 1), bias=bias is not None,
            )
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(weight.copy()))
                if bias is not None and conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(bias.copy()))
            self.convs[str(index)] = conv
            self.sources[str(index)] = (node.input[1], node.input[2] if bias is not None else None)
        # The head outputs: the tensor each named output is computed from, before its reshape (and sigmoid).
        producers = {out: node for node in self.nodes for out in node.output}
        self.head_sources: dict[str, str] = {}
        for name in self.output_names:
            node = producers[name]
            while node.op_type in ("Sigmoid", "Reshape", "Transpose"):
                node = producers[node.input[0]]
            self.head_sources[name] = node.output[0]

    @classmethod
    def from_onnx(cls, path: str | Path) -> YuNetNet:
        return cls(onnx.load(str(path)))

    def forward(self, image: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        values: dict[str, torch.Tensor] = {self.input_name: image}
        wanted = set(self.head_sources.values())
        for index, node in enumerate(self.nodes):
            if node.op_type in ("Transpose", "Reshape", "Sigmoid"):
                continue  # the output formatting: done below, per head, without the sigmoid
            x = values[node.input[0]]
            if node.op_type == "Conv":
                out = self.convs[str(index)](x)
            elif node.op_type == "Relu":
                out = F.relu(x)
            elif node.op_type == "MaxPool":
                attrs = _attributes(node)
                out = F.max_pool2d(x, attrs["kernel_shape"], attrs["strides"], ceil_mode=bool(attrs.get("ceil_mode")))
            elif node.op_type == "Resize":
                out = F.interpolate(x, scale_factor=2.0, mode="nearest")
            else:  # Add
                out = x + values[node.input[1]]
            values[node.output[0]] = out
            if wanted <= values.keys():
                break
        outputs: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
        for name in self.output_names:  # cls_8, cls_16, cls_32, obj_8, ...
            head = name.split("_")[0]
            x = values[self.head_sources[name]]
            outputs[head].append(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1]))
        return outputs

    def to_onnx(self, template: str | Path, out: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write the trained weights into a copy of ``template`` (the file this module was read from)."""
        model = onnx.load(str(template))
        trained: dict[str, np.ndarray] = {}
        for key, (weight_name, bias_name) in self.sources.items():
            conv = self.convs[key]
            assert isinstance(conv, nn.Conv2d)
            trained[weight_name] = conv.weight.detach().cpu().numpy().astype(np.float32)
            if bias_name is not None and conv.bias is not None:
                trained[bias_name] = conv.bias.detach().cpu().numpy().astype(np.float32)
        for init in model.graph.initializer:
            if init.name in trained:
                init.CopyFrom(numpy_helper.from_array(trained[init.name], init.name))
        # Free height and width (the stock file fixes 640x640): onnxruntime then takes any photo size, as
        # OpenCV does anyway (it resizes the net itself). Names and meaning of every output stay the stock ones.
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for output in model.graph.output:
            output.type.tensor_type.shape.dim[1].dim_param = "priors"
        del model.graph.value_info[:]  # the stock file's inner shapes are those of 640x640: stale for any other
        del model.metadata_props[:]
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=key, value=str(value))
        onnx.checker.check_model(model)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(out))
