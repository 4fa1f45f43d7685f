"""dlib's serialisation primitives and network layout, on bytes written here the way dlib's sources say."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agegender.models.dlib_format import LAYER, SKIP, TAG, DlibFormatError, DlibStream, read_network

# ----------------------------------------------------------------------------- an encoder (for tests only)


def dlib_int(value: int) -> bytes:
    """Control byte (bit 7: negative, bits 0-3: byte count) then the magnitude, little-endian; 0 is 01 00."""
    magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def dlib_float(value: float) -> bytes:
    """float_details of a float32: integer mantissa of 24 bits, then the exponent."""
    if math.isinf(value):
        return dlib_int(0) + dlib_int(32000 if value > 0 else 32001)
    fraction, exponent = math.frexp(float(np.float32(value)))  # what dlib's float holds
    return dlib_int(int(fraction * 2**24)) + dlib_int(exponent - 24)


def dlib_name(text: str) -> bytes:
    return dlib_int(len(text)) + text.encode("ascii")


def dlib_sizes(shape: tuple[int, ...]) -> bytes:
    return b"".join(dlib_int(size) for size in shape)


def dlib_tensor(values: np.ndarray | None, shape: tuple[int, int, int, int] | None = None) -> bytes:
    """Version 2: sizes (num_samples, k, nr, nc), then raw little-endian float32."""
    values = np.zeros(0, np.float32) if values is None else np.asarray(values, np.float32).reshape(-1)
    shape = shape or ((len(values), 1, 1, 1) if len(values) else (0, 0, 0, 0))
    return dlib_int(2) + dlib_sizes(shape) + values.astype("<f4").tobytes()


def dlib_alias(shape: tuple[int, int, int, int]) -> bytes:
    return dlib_int(1) + dlib_sizes(shape)


def layer_state(over_input: bool) -> bytes:
    """An add_layer's flags and (empty) buffers after its details; the input layer's adds a sample factor."""
    state = b"100" + dlib_tensor(None) * 3
    return state + dlib_int(1) if over_input else state


def dlib_network(loss: bytes, kinds: list[str], input_details: bytes, layer_details: list[bytes]) -> bytes:
    """A whole file: loss, versions outermost first, input layer, then each layer's details input side first."""
    versions = [dlib_int(3 if index == 0 else 2) if kind == LAYER else dlib_int(1) for index, kind in enumerate(kinds)]
    body = b"".join(details + layer_state(index == 0) for index, details in enumerate(layer_details))
    return dlib_int(1) + loss + b"".join(reversed(versions)) + input_details + body


METRIC_LOSS = dlib_name("loss_metric_2") + dlib_float(0.04) + dlib_float(0.6)
INPUT_150 = (
    dlib_name("input_rgb_image_sized") + b"".join(map(dlib_float, (122.782, 117.001, 104.298))) + dlib_int(150) * 2
)


def stream_of(data: bytes) -> DlibStream:
    return DlibStream(data, Path("net.dat"))


# ----------------------------------------------------------------------------- primitives


@pytest.mark.parametrize("value", [0, 1, 2, 255, 256, 4736, -1, -28, 2**40, -(2**62)])
def test_integers_round_trip(value):
    stream = stream_of(dlib_int(value))
    assert stream.integer("n") == value and stream.offset == len(dlib_int(value))


def test_integer_bytes_from_the_real_file():
    """b'\\x01\\x02' is the version 2 every add_layer starts with; b'\\x81\\x1c' the exponent -28."""
    stream = stream_of(b"\x01\x02\x81\x1c")
    assert [stream.integer("a"), stream.integer("b")] == [2, -28]


@pytest.mark.parametrize("value", [0.04, 0.6, 122.782, -3.5e-7, 1.0, 0.0, math.inf, -math.inf])
def test_floats_read_as_float32(value):
    assert stream_of(dlib_float(value)).real("x") == float(np.float32(value))


def test_the_real_files_margin_reads_as_0_04():
    assert stream_of(bytes.fromhex("030ad7a3811c")).real("margin") == pytest.approx(0.04, abs=1e-9)


def test_reserved_control_bits_mean_another_format():
    with pytest.raises(DlibFormatError, match=r"net.dat: not dlib's serialisation: byte 0x89"):
        stream_of(b"\x89PNG").integer("the loss layer version")


def test_a_short_read_says_truncated():
    with pytest.raises(DlibFormatError, match=r"net.dat: file ends inside x; is it truncated\? \(at byte 1\)"):
        stream_of(b"\x02\x01").integer("x")


def test_names_must_be_short_printable_text():
    assert stream_of(dlib_name("relu_")).name("layer") == "relu_"
    with pytest.raises(DlibFormatError, match="not a dlib network file: expected loss layer"):
        stream_of(dlib_int(136) + bytes(136)).name("loss layer")  # e.g. a shape predictor's matrix


def test_tensors_version_2_raw_and_version_1_portable_floats():
    values = np.array([0.5, -2.0, 3.25], np.float32)
    assert np.array_equal(stream_of(dlib_tensor(values)).tensor("t").reshape(-1), values)
    version_1 = dlib_int(1) + dlib_sizes((3, 1, 1, 1)) + b"".join(dlib_float(float(v)) for v in values)
    assert np.array_equal(stream_of(version_1).tensor("t").reshape(-1), values)
    with pytest.raises(DlibFormatError, match="file ends inside t"):
        stream_of(dlib_tensor(values)[:-1]).tensor("t")


# ----------------------------------------------------------------------------- networks


def tiny_network() -> tuple[list[str], bytes]:
    """relu<add_prev1<relu<tag1<relu<input>>>>> style: layer, tag, layer, skip, layer."""
    kinds = [LAYER, TAG, LAYER, SKIP, LAYER]
    relu, add = dlib_name("relu_"), dlib_name("add_prev_")
    return kinds, dlib_network(METRIC_LOSS, kinds, INPUT_150, [relu, relu, add])


def test_a_network_reads_its_loss_input_and_layers_in_order(tmp_path):
    kinds, data = tiny_network()
    (tmp_path / "net.dat").write_bytes(data)
    network = read_network(tmp_path / "net.dat", kinds, "the tiny net")
    assert network.loss.name == "loss_metric_2"
    assert network.loss.settings["distance_threshold"] == pytest.approx(0.6)
    assert network.input.settings["nr"] == 150
    assert network.input.settings["mean_rgb"] == pytest.approx([122.782, 117.001, 104.298], abs=1e-4)
    assert [layer.name for layer in network.layers] == ["relu_", "relu_", "add_prev_"]


def test_another_layout_or_trailing_bytes_are_refused(tmp_path):
    kinds, data = tiny_network()
    path = tmp_path / "net.dat"
    path.write_bytes(data)
    with pytest.raises(DlibFormatError, match=r"not the tiny net: layer 3 \(layer\) has version 1 \(expected 2\)"):
        read_network(path, [LAYER, TAG, LAYER, LAYER, LAYER], "the tiny net")
    path.write_bytes(data + b"\x00")
    with pytest.raises(DlibFormatError, match="not the tiny net: 1 bytes follow the network"):
        read_network(path, kinds, "the tiny net")


def test_an_unknown_loss_layer_is_named(tmp_path):
    path = tmp_path / "mmod.dat"
    path.write_bytes(dlib_int(1) + dlib_name("loss_mmod_") + bytes(64))
    with pytest.raises(DlibFormatError, match=r"mmod.dat: not the net: its loss layer is dlib's 'loss_mmod_'"):
        read_network(path, [LAYER], "the net")
