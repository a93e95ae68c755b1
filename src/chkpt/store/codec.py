"""Compression of blobs: the one place that calls the compressor.

A compressed blob starts with a zstd skippable frame holding the file's length (so a blob cut
short is seen without reading it), then one zstd frame: `zstd -d` reads it as it is.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CODEC = "zstd"  # level 1: see benchmarks/bench_chunks.py
SAMPLE = 64 << 10
MIN_SAVING = 0.9  # a compressed blob must be at most this fraction of the raw bytes
HEADER = struct.Struct("<IIQ")
SKIPPABLE_MAGIC = 0x184D2A50


def compress(data: Any) -> bytes | None:
    """`data` compressed with its header, None when that would save less than a tenth of it
    (random floats, compressed data): a sample tells first, so incompressible data costs little."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=1)
    size = memoryview(data).nbytes
    sample = data[:SAMPLE]
    if size > SAMPLE and len(compressor.compress(sample)) > len(sample) * MIN_SAVING:
        return None
    packed = compressor.compress(data)
    if len(packed) + HEADER.size > size * MIN_SAVING:
        return None
    return HEADER.pack(SKIPPABLE_MAGIC, 8, HEADER.size + len(packed)) + packed


def declared_length(header: bytes) -> int | None:
    """The file length a compressed blob's header gives (None for no such header)."""
    if len(header) != HEADER.size:
        return None
    magic, frame_size, length = HEADER.unpack(header)
    return length if (magic, frame_size) == (SKIPPABLE_MAGIC, 8) else None


def decompress(packed: Any, size: int) -> bytes:
    """The `size` bytes of a compressed blob's file content `packed` (header included);
    ValueError when it is not that."""
    import zstandard

    if declared_length(bytes(packed[:HEADER.size])) != len(packed):
        raise ValueError("its header does not give its length")
    frame = packed[HEADER.size:]
    declared = zstandard.get_frame_parameters(frame).content_size
    if declared != size:  # checked before anything is allocated for it
        raise ValueError(f"it holds {declared} bytes, not {size}")
    data = zstandard.ZstdDecompressor().decompress(frame)
    if len(data) != size:
        raise ValueError(f"it holds {len(data)} bytes, not {size}")
    return data
