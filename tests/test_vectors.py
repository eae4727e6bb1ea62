import base64

import numpy as np
import pytest

from jinaloc.errors import JinalocError
from jinaloc.vectors import check_dim, encode, matryoshka, pack_bits, quantize


def test_matryoshka_slices_then_normalizes():
    x = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    out = matryoshka(x, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8]], rtol=1e-6)
    # Normalizing first and then slicing would not be unit length.
    assert not np.isclose(np.linalg.norm(matryoshka(x)[0, :2]), 1.0)


def test_check_dim():
    assert check_dim(None, 768, [32, 768]) == 768
    assert check_dim(32, 768, [32, 768]) == 32
    with pytest.raises(JinalocError, match="Matryoshka dims: 32, 768"):
        check_dim(100, 768, [32, 768])
    assert check_dim(17, 64, None) == 17
    with pytest.raises(JinalocError, match="between 1 and 64"):
        check_dim(65, 64, None)


def test_pack_bits_is_lsb_first():
    v = np.zeros((1, 16), np.float32)
    v[0, 0] = 1.0  # element 0 -> bit 0 of byte 0
    v[0, 9] = 1.0  # element 9 -> bit 1 of byte 1
    assert pack_bits(v).tolist() == [[1, 2]]
    bits = np.unpackbits(pack_bits(v), axis=-1, bitorder="little")
    assert bits[0].nonzero()[0].tolist() == [0, 9]


def test_wire_types_are_jinas_msb_first():
    """api.jina.ai packs the sign bits MSB-first (numpy's default order) and sends binary as
    ubinary - 128: measured against the hosted API, ubinary [50, 193, 128, 255] is binary
    [-78, 65, 0, 127]. The index keeps sqlite-vec's LSB-first order."""
    ubinary = np.array([50, 193, 128, 255], np.uint8)
    x = np.where(np.unpackbits(ubinary), 0.5, -0.5).astype(np.float32)[None]
    assert quantize(x, "ubinary").tolist() == [[50, 193, 128, 255]]
    assert quantize(x, "binary").tolist() == [[-78, 65, 0, 127]]
    assert encode(x, "binary") == [[-78, 65, 0, 127]]
    v = np.zeros((1, 16), np.float32)
    v[0, 0] = v[0, 9] = 1.0  # element 0 -> the high bit of byte 0, element 9 -> 0x40 of byte 1
    assert quantize(v, "ubinary").tolist() == [[128, 64]]
    assert pack_bits(v).tolist() == [[1, 2]]  # the index's order
    bits = np.unpackbits(quantize(v, "ubinary"), axis=-1, bitorder="big")
    assert bits[0].nonzero()[0].tolist() == [0, 9]


def test_encodings_round_trip():
    rng = np.random.default_rng(0)
    x = matryoshka(rng.standard_normal((3, 64)))
    assert np.allclose(encode(x, "float"), x)
    ub = np.array(encode(x, "ubinary"), dtype=np.uint8)
    b = np.array(encode(x, "binary"), dtype=np.int16)
    assert ub.shape == (3, 8)
    np.testing.assert_array_equal(b + 128, ub)
    assert quantize(x, "binary").dtype == np.int8
    decoded = np.frombuffer(base64.b64decode(encode(x, "base64")[1]), dtype="<f4")
    np.testing.assert_array_equal(decoded, x[1])
    with pytest.raises(JinalocError, match="unknown output type"):
        encode(x, "int4")


def test_pack_bits_equals_sqlite_vec_quantize_binary(tmp_path):
    from jinaloc.index.store import Store

    rng = np.random.default_rng(1)
    x = matryoshka(rng.standard_normal((20, 256)))
    with Store.open(tmp_path / "bits.db") as store:
        import sqlite_vec  # the index loads it only to upgrade files of schema 1-4

        store.conn.enable_load_extension(True)
        sqlite_vec.load(store.conn)
        for row in x:
            (blob,) = store.conn.execute(
                "SELECT vec_quantize_binary(?)", [row.astype(np.float32).tobytes()]
            ).fetchone()
            assert np.frombuffer(blob, np.uint8).tolist() == pack_bits(row).tolist()
        # Hamming distance in sqlite-vec agrees with numpy on the same packed bits.
        a, b = pack_bits(x[0]), pack_bits(x[1])
        (dist,) = store.conn.execute(
            "SELECT vec_distance_hamming(vec_bit(?), vec_bit(?))", [a.tobytes(), b.tobytes()]
        ).fetchone()
        assert dist == int(np.unpackbits(a ^ b).sum())
    # MSB-first (numpy's default) would not match.
    assert np.packbits(x[0] > 0).tolist() != pack_bits(x[0]).tolist()
