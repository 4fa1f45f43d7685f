"""A reader for dlib's own serialisation of a dnn network (a `.dat` written by `dlib::serialize(net, out)`).

Written from the format as dlib's sources define it (dlib/serialize.h, float_details.h, dnn/core.h,
tensor.h, layers.h, input.h, loss.h); no dlib code is used or needed.

Primitives: an integer is a control byte (bit 7: negative; bits 0-3: how many little-endian magnitude
bytes follow; bits 4-6 always 0), a string is an integer length and its bytes, a bool the ASCII
character '1' or '0', a float dlib's portable float (integer mantissa, then integer exponent: mantissa
* 2**exponent, three exponent values meaning inf, -inf, nan). A tensor is version 1 (each value such a
float) or version 2 (raw little-endian float32), after its (num_samples, k, nr, nc) sizes.

A network is written outermost first: the loss layer's version and details, then each layer's version
down to the input layer, then the input layer and, back outward, every computational layer's details
and state. Tag and skip layers write only their version, so the file alone cannot say where they sit:
`read_network` takes the layer kinds (from the network's definition) and checks the file against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from agegender.errors import UserInputError

LAYER = "layer"  # dlib's add_layer: a computational layer (con, affine, relu, pooling, fc, add_prev ...)
TAG = "tag"  # add_tag_layer: marks an activation for a later skip or add_prev
SKIP = "skip"  # add_skip_layer: continues from a tagged activation
_FLOAT_INF, _FLOAT_NINF = 32000, 32001  # float_details exponents meaning +inf / -inf (32002: nan)


class DlibFormatError(UserInputError):
    """A file that is not the expected dlib network: not dlib's format, truncated, or another network."""


@dataclass(frozen=True)
class DlibLayer:
    """One layer's serialised details: its dlib type name with version suffix ('con_4', 'affine_', ...),
    its settings, and its parameter tensors as float32 arrays shaped (num_samples, k, nr, nc)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    params: np.ndarray | None = None


@dataclass(frozen=True)
class DlibNetwork:
    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]  # computational layers, input side first


class DlibStream:
    """Sequential reads of dlib primitives from a file's bytes; every failure names the file and offset."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = memoryview(data), path, 0

    def fail(self, problem: str) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: {problem} (at byte {self.offset})")

    def take(self, count: int, what: str) -> memoryview:
        if count < 0 or self.offset + count > len(self.data):
            raise self.fail(f"file ends inside {what}; is it truncated?")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def integer(self, what: str) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:  # the reserved bits of a control byte are always 0
            raise self.fail(f"not dlib's serialisation: byte {control:#04x} cannot start {what}")
        magnitude = int.from_bytes(self.take(size, what), "little")
        return -magnitude if control & 0x80 else magnitude

    def real(self, what: str) -> float:
        mantissa, exponent = self.integer(what), self.integer(what)
        if exponent < _FLOAT_INF:
            return math.ldexp(mantissa, exponent)
        return {_FLOAT_INF: math.inf, _FLOAT_NINF: -math.inf}.get(exponent, math.nan)

    def boolean(self, what: str) -> bool:
        value = bytes(self.take(1, what))
        if value not in (b"0", b"1"):
            raise self.fail(f"not dlib's serialisation: {value!r} where {what} (a bool '0'/'1') was expected")
        return value == b"1"

    def name(self, what: str, max_length: int = 64) -> str:
        """A layer's type name: short printable ASCII, else the file is not a dlib network."""
        length = self.integer(what)
        raw = bytes(self.take(length, what)) if 0 < length <= max_length else b""
        if not raw or not all(32 < byte < 127 for byte in raw):
            raise self.fail(f"not a dlib network file: expected {what} (a layer name)")
        return raw.decode("ascii")

    def sizes(self, what: str) -> tuple[int, int, int, int]:
        sizes = tuple(self.integer(what) for _ in range(4))  # (num_samples, k, nr, nc)
        if min(sizes) < 0 or math.prod(sizes) > len(self.data):
            raise self.fail(f"implausible {what} sizes {sizes}")
        return sizes  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        version = self.integer(what)
        if version not in (1, 2):
            raise self.fail(f"unknown {what} tensor version {version}")
        shape = self.sizes(what)
        count = math.prod(shape)
        if version == 2:  # raw little-endian float32
            values = np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)
        else:  # one portable float each (files from before 2016)
            values = np.array([self.real(what) for _ in range(count)], dtype=np.float32)
        return values.reshape(shape)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        """An alias_tensor: the shape of one slice of a layer's parameter tensor."""
        if self.integer(what) != 1:
            raise self.fail(f"unknown {what} alias_tensor version")
        return self.sizes(what)


# ----------------------------------------------------------------------------- layer details


def _convolution(stream: DlibStream) -> dict[str, Any]:
    params = stream.tensor("con_ params")
    settings = {
        key: stream.integer(f"con_ {key}")
        for key in ("filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    }
    settings["filters_shape"], settings["biases_shape"] = stream.alias("con_ filters"), stream.alias("con_ biases")
    settings["multipliers"] = [stream.real("con_ learning-rate multiplier") for _ in range(4)]
    return {"params": params, **settings}


def _affine(stream: DlibStream) -> dict[str, Any]:
    params = stream.tensor("affine_ params")
    gamma, beta = stream.alias("affine_ gamma"), stream.alias("affine_ beta")
    return {"params": params, "gamma_shape": gamma, "beta_shape": beta, "mode": stream.integer("affine_ mode")}


def _pooling(stream: DlibStream) -> dict[str, Any]:
    keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return {key: stream.integer(f"pooling {key}") for key in keys}


def _fully_connected(stream: DlibStream) -> dict[str, Any]:
    outputs, inputs = stream.integer("fc_ num_outputs"), stream.integer("fc_ num_inputs")
    params = stream.tensor("fc_ params")
    weights, biases = stream.alias("fc_ weights"), stream.alias("fc_ biases")
    bias_mode = stream.integer("fc_ bias mode")
    multipliers = [stream.real("fc_ learning-rate multiplier") for _ in range(4)]
    return {"params": params, "outputs": outputs, "inputs": inputs, "weights_shape": weights,
            "biases_shape": biases, "bias_mode": bias_mode, "multipliers": multipliers}  # fmt: skip


def _nothing(stream: DlibStream) -> dict[str, Any]:
    return {}


def _input_rgb_sized(stream: DlibStream) -> dict[str, Any]:
    means = [stream.real("input mean") for _ in range(3)]
    return {"mean_rgb": means, "nr": stream.integer("input nr"), "nc": stream.integer("input nc")}


def _metric_loss(stream: DlibStream) -> dict[str, Any]:
    return {"margin": stream.real("loss margin"), "distance_threshold": stream.real("loss threshold")}


LAYER_READERS: dict[str, Callable[[DlibStream], dict[str, Any]]] = {
    "con_4": _convolution,
    "affine_": _affine,
    "relu_": _nothing,
    "max_pool_2": _pooling,
    "avg_pool_2": _pooling,
    "fc_2": _fully_connected,
    "add_prev_": _nothing,
}
INPUT_READERS = {"input_rgb_image_sized": _input_rgb_sized}
LOSS_READERS = {"loss_metric_": _nothing, "loss_metric_2": _metric_loss}


def read_details(stream: DlibStream, readers: dict[str, Callable], what: str, network: str) -> DlibLayer:
    start = stream.offset
    name = stream.name(what)
    if name not in readers:
        stream.offset = start
        raise stream.fail(f"not {network}: its {what} is dlib's '{name}' (expected {' or '.join(readers)})")
    settings = readers[name](stream)
    params = settings.pop("params", None)
    return DlibLayer(name, settings, params)


# ----------------------------------------------------------------------------- the network


def _expect_version(stream: DlibStream, allowed: tuple[int, ...], what: str, network: str) -> int:
    version = stream.integer(f"{what} version")
    if version not in allowed:
        raise stream.fail(f"not {network}: {what} has version {version} (expected {' or '.join(map(str, allowed))})")
    return version


def _layer_state(stream: DlibStream, over_input: bool, version: int) -> None:
    """An add_layer's saved training state after its details (flags, gradient and output buffers): skipped."""
    for flag in ("setup flag", "gradient-stale flag", "output-disabled flag"):
        stream.boolean(flag)
    for buffer in ("x_grad", "cached_output", "grad_final" if over_input else "params_grad"):
        stream.tensor(buffer)
    if over_input and version >= 3:
        stream.integer("sample expansion factor")


def read_network(path: Path, kinds: Sequence[str], network: str) -> DlibNetwork:
    """Parse a `.dat` whose network has the given layer kinds (LAYER/TAG/SKIP, input side first, the
    first being the layer on the input); `network` names it in errors ("dlib's face recognition ResNet")."""
    path = Path(path)
    stream = DlibStream(path.read_bytes(), path)
    _expect_version(stream, (1,), "the loss layer", network)
    loss = read_details(stream, LOSS_READERS, "loss layer", network)
    versions = []
    for index, kind in reversed(list(enumerate(kinds))):  # outermost first
        allowed = {LAYER: (2, 3) if index == 0 else (2,), TAG: (1,), SKIP: (1,)}[kind]
        versions.append(_expect_version(stream, allowed, f"layer {index} ({kind})", network))
    versions.reverse()
    net_input = read_details(stream, INPUT_READERS, "input layer", network)
    layers = []
    for index, kind in enumerate(kinds):
        if kind == LAYER:
            layers.append(read_details(stream, LAYER_READERS, f"layer {index}", network))
            _layer_state(stream, over_input=index == 0, version=versions[index])
    if stream.offset != len(stream.data):
        raise stream.fail(f"not {network}: {len(stream.data) - stream.offset} bytes follow the network")
    return DlibNetwork(loss, net_input, layers)
