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
# during a pause (an exit, crash or signal checkpoint), only data that compresses to at most this
# fraction is compressed: zstd level 1 runs at about 400 MB/s a core here, slower than writing to
# the page cache, so the pause is longer than a raw write (docs/benchmarks.md); what pays it back
# is the bytes not flushed to disk nor uploaded afterwards
PAUSE_SAVING = 0.5
# and the sample tried first is smaller: 16 KiB of random floats take 0.03 ms to try, 64 KiB
# 0.09 ms, against about 0.9 ms of CPU time to write a 4 MiB chunk to the page cache
PAUSE_SAMPLE = 16 << 10
HEADER = struct.Struct("<IIQ")
SKIPPABLE_MAGIC = 0x184D2A50


def compress(data: Any, saving: float = MIN_SAVING, sample_size: int = SAMPLE) -> bytes | None:
    """`data` compressed with its header, None when that would take more than `saving` of its
    size (random floats, compressed data): its first `sample_size` bytes tell first, so
    incompressible data costs little."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=1)
    view = memoryview(data).cast("B")
    size = view.nbytes
    sample = view[:sample_size]
    if size > sample_size and len(compressor.compress(sample)) > sample.nbytes * saving:
        return None
    packed = compressor.compress(view)
    if len(packed) + HEADER.size > size * saving:
        return None
    return HEADER.pack(SKIPPABLE_MAGIC, 8, HEADER.size + len(packed)) + packed


def declared_length(header: bytes) -> int | None:
    """The file length a compressed blob's header gives (None for no such header)."""
    if len(header) != HEADER.size:
        return None
    magic, frame_size, length = HEADER.unpack(header)
    return length if (magic, frame_size) == (SKIPPABLE_MAGIC, 8) else None


def decompress_into(packed: Any, target: memoryview) -> None:
    """Decompress a compressed blob's file content `packed` (header included) straight into
    `target`, which it must fill exactly; ValueError when it is not that."""
    import zstandard

    if declared_length(bytes(packed[:HEADER.size])) != len(packed):
        raise ValueError("its header does not give its length")
    frame = memoryview(packed)[HEADER.size:]
    declared = zstandard.get_frame_parameters(frame).content_size
    if declared != target.nbytes:
        raise ValueError(f"it holds {declared} bytes, not {target.nbytes}")
    done = 0
    with zstandard.ZstdDecompressor().stream_reader(frame) as reader:
        while done < target.nbytes:
            count = reader.readinto(target[done:])
            if not count:
                break
            done += count
        extra = reader.read(1)
    if done != target.nbytes or extra:
        raise ValueError(f"it does not hold {target.nbytes} bytes")
