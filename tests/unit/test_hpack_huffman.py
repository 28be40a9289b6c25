"""hpack_partial._huffman, the compiled loop over hpack's own Huffman state
table: byte for byte what hpack.huffman_table.decode_huffman returns, and the
same error where hpack raises one (invalid symbol, incomplete last symbol)."""

from __future__ import annotations

import random

import pytest
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman

from tracer.protocols.hpack_partial import _huffman

ENC = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def _outcome(fn, raw: bytes):
    try:
        return "ok", fn(raw)
    except HPACKDecodingError as e:
        return "error", str(e)


def _inputs():
    rnd = random.Random(5)
    yield b""
    yield b"\xff\xff\xff\xff"  # EOS in the data: invalid
    yield ENC.encode(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    for n in (127, 128, 129, 200):  # either side of the C buffer's limit
        yield ENC.encode(bytes(rnd.randrange(256) for _ in range(n)))
    for _ in range(6000):
        yield ENC.encode(bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 90))))
        yield bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 140)))


def test_same_bytes_and_errors_as_hpack():
    seen = {"ok": 0, "error": 0}
    messages = set()
    for raw in _inputs():
        want = _outcome(decode_huffman, raw)
        got = _outcome(_huffman, raw)
        assert got == want, raw
        assert type(got[1]) is type(want[1])
        seen[want[0]] += 1
        if want[0] == "error":
            messages.add(want[1])
    assert seen["ok"] > 6000 and seen["error"] > 1000
    assert messages == {"Invalid Huffman string", "Incomplete Huffman string"}


@pytest.mark.parametrize("text", [b"", b"a", b"application/grpc", bytes(range(256))])
def test_round_trip(text):
    assert _huffman(ENC.encode(text)) == text
