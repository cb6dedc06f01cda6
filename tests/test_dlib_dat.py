"""dlib's serialisation format, byte by byte, and the real model file."""

from __future__ import annotations

import numpy as np
import pytest

from leam.models.dlib_dat import DlibFormatError, _Reader, read_dlib_net


def _int(v: int) -> bytes:
    mag = abs(v)
    n = max(1, (mag.bit_length() + 7) // 8)
    return bytes([n | (0x80 if v < 0 else 0)]) + mag.to_bytes(n, "little")


@pytest.mark.parametrize("v", [0, 1, 2, 127, 128, 255, 256, 4736, -28, -1, 2**40 + 7])
def test_integer_encoding(v):
    r = _Reader(_int(v), "mem")
    assert r.int() == v
    assert r.pos == len(r.b)


def test_float_is_mantissa_times_power_of_two():
    # 0.6 as dlib stores it: mantissa 0x99999a, exponent -24
    r = _Reader(_int(0x99999A) + _int(-24), "mem")
    assert r.float() == 0x99999A * 2.0**-24
    r = _Reader(_int(0) + _int(32000) + _int(0) + _int(32002), "mem")
    assert r.float() == np.inf
    assert np.isnan(r.float())


def test_string_bool_tensor():
    data = _int(5) + b"con_4" + b"1" + b"0" + _int(2) + _int(2) + _int(1) + _int(1) + _int(3)
    data += np.arange(6, dtype="<f4").tobytes()
    r = _Reader(data, "mem")
    assert r.str() == "con_4"
    assert r.bool() is True and r.bool() is False
    t = r.tensor()
    assert t.shape == (2, 1, 1, 3)
    np.testing.assert_array_equal(t.reshape(-1), np.arange(6, dtype=np.float32))


def test_bad_bytes_raise_with_offset():
    with pytest.raises(DlibFormatError, match="byte 0"):
        _Reader(b"\x3f", "mem").int()
    with pytest.raises(DlibFormatError, match="bad bool"):
        _Reader(b"x", "mem").bool()


def test_real_file_layout(dlib_net_path):
    net = read_dlib_net(dlib_net_path)
    assert net.loss == "loss_metric_2"
    assert net.loss_fields["dist_thresh"] == pytest.approx(0.6, abs=1e-6)
    assert net.input_size == (150, 150)
    np.testing.assert_allclose(net.input_means, (122.782, 117.001, 104.298), atol=1e-4)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("fc") == 1
    assert net.layers[0].fields["padding"] == (0, 0) and net.layers[0].fields["stride"] == (2, 2)
    # stride-2 convolutions have no padding (dlib's default), stride-1 have k//2
    for layer in net.layers:
        if layer.kind == "con" and layer.fields["nr"] == 3:
            assert layer.fields["padding"] == ((0, 0) if layer.fields["stride"] == (2, 2) else (1, 1))
    # a down block lists its avg-pool after the body: con affine relu con affine avg_pool add_prev relu
    i = next(j for j, layer in enumerate(net.layers) if layer.kind == "avg_pool")
    assert kinds[i - 5 : i + 3] == ["con", "affine", "relu", "con", "affine", "avg_pool", "add_prev", "relu"]


def test_truncated_file_is_rejected(tmp_path, dlib_net_path):
    data = dlib_net_path.read_bytes()
    bad = tmp_path / "cut.dat"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="runs past the end|unexpected end"):
        read_dlib_net(bad)
    bad.write_bytes(data + b"\x00")
    with pytest.raises(DlibFormatError, match="trailing"):
        read_dlib_net(bad)
