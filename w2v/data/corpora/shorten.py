"""Shorten-compressed NIST SPHERE (WSJ's ``.wv1``) -> a shorten stream ffmpeg decodes.

ffmpeg's NIST SPHERE demuxer reads PCM, a-law and mu-law only, and its shorten decoder insists
that the stream open with a verbatim RIFF WAVE header, which Shorten writes when it compresses a
WAVE file but NIST's embedded shorten (SPHERE ``sample_coding pcm,embedded-shorten-v2.00``)
never has. This module copies the shorten stream out of the SPHERE file and inserts that
verbatim section (a 44-byte canonical header carrying the SPHERE header's rate and channels)
right after the stream's own header fields, shifting the rest of the bit stream; no sample is
decoded here. Used as a lhotse "command" source::

    python -m w2v.data.corpora.shorten FILE.wv1 | ffmpeg -f shn -i - -f wav -

Bit syntax (Robinson's Shorten, version >= 1): magic ``ajkg``, one version byte, then the header
fields type, channels, block size, max LPC order, means, skip bytes, each an unsigned Rice code
whose own parameter is Rice-coded (``uvar(2)`` then ``uvar(k)``; ``uvar(k)`` = unary high part
as zeros ended by a one, then ``k`` low bits), then commands (``uvar(2)``; 9 = verbatim).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

__all__ = ["with_riff_header", "uvar_bits"]

FN_VERBATIM = 9
FNSIZE, VERBATIM_CKSIZE_SIZE, VERBATIM_BYTE_SIZE, ULONGSIZE = 2, 5, 8, 2


def uvar_bits(value: int, k: int) -> list[int]:
    """The bits of Shorten's ``uvar(k)`` code of ``value``."""
    return [0] * (value >> k) + [1] + [(value >> (k - 1 - i)) & 1 for i in range(k)]


class _Bits:
    def __init__(self, bits: np.ndarray, pos: int):
        self.bits, self.pos = bits, pos

    def uvar(self, k: int) -> int:
        ones = np.flatnonzero(self.bits[self.pos:self.pos + (1 << 16)])
        if not len(ones):
            raise ValueError("corrupt shorten stream (unterminated unary code)")
        high = int(ones[0])
        self.pos += high + 1
        low = 0
        for _ in range(k):
            low = (low << 1) | int(self.bits[self.pos])
            self.pos += 1
        return (high << k) | low

    def ulong(self) -> int:
        return self.uvar(self.uvar(ULONGSIZE))


def _sphere_fields(data: bytes, path: Path) -> tuple[int, dict[str, str]]:
    if not data.startswith(b"NIST_1A"):
        raise ValueError(f"{path}: not a NIST SPHERE file")
    size = int(data.split(b"\n")[1])
    fields = {}
    for line in data[:size].decode("latin-1").split("\n")[2:]:
        if line.strip() == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    return size, fields


def with_riff_header(path: Path) -> bytes:
    """The shorten stream of a SPHERE file, with the verbatim WAVE header ffmpeg requires."""
    data = Path(path).read_bytes()
    size, fields = _sphere_fields(data, path)
    stream = data[size:]
    if stream[:4] != b"ajkg":
        raise ValueError(f"{path}: no shorten stream after the SPHERE header (magic {stream[:4]!r})")
    version = stream[4]
    if version < 1:
        raise ValueError(f"{path}: shorten version {version} (only versions >= 1 are handled)")
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))
    header_end = _header_end(bits)
    if _Bits(bits, header_end).uvar(FNSIZE) == FN_VERBATIM:  # already has one (a shortened WAVE file)
        return stream
    channels, rate = int(fields.get("channel_count", 1)), int(fields["sample_rate"])
    n = int(fields.get("sample_count", 0)) * channels * 2
    riff = b"RIFF" + struct.pack("<I4s4sIHHIIHH4sI", 36 + n, b"WAVE", b"fmt ", 16, 1, channels, rate,
                                 rate * channels * 2, channels * 2, 16, b"data", n)
    insert = uvar_bits(FN_VERBATIM, FNSIZE) + uvar_bits(len(riff), VERBATIM_CKSIZE_SIZE)
    for byte in riff:
        insert += uvar_bits(byte, VERBATIM_BYTE_SIZE)
    out = np.concatenate([bits[:header_end], np.array(insert, dtype=np.uint8), bits[header_end:]])
    return np.packbits(out).tobytes()


def _header_end(bits: np.ndarray) -> int:
    """Bit position just after the header fields (and skipped bytes) of a shorten stream."""
    r = _Bits(bits, 40)
    for _ in range(5):
        r.ulong()
    skip = r.ulong()  # (read before r.pos is, or the read's advance is lost)
    r.pos += 8 * skip
    return r.pos


if __name__ == "__main__":
    sys.stdout.buffer.write(with_riff_header(Path(sys.argv[1])))
