"""Compression of blobs: the one place that calls the compressor.

A compressed blob starts with a zstd skippable frame holding the file's length (so a blob cut
short is seen without reading it), then one zstd frame: `zstd -d` reads it as it is. The zstd
library is the standard library's `compression.zstd` on Python 3.14+ and the `zstandard`
package before (the only place it is a dependency); both write and read the same frames.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CODEC = "zstd"  # level 1: see benchmarks/bench_chunks.py
SAMPLE = 64 << 10
MIN_SAVING = 0.9  # a compressed blob must be at most this fraction of the raw bytes
HEADER = struct.Struct("<IIQ")
SKIPPABLE_MAGIC = 0x184D2A50


class Zstd:
    """One zstd library's three calls: a level-1 frame that records its content size, that
    size read from a frame's header (None when it is not recorded), and a frame decompressed."""

    def __init__(self, name: str, compress: Callable[[Any], bytes], content_size: Callable[[Any], int | None],
                 decompress: Callable[[Any], bytes]) -> None:
        self.name = name
        self.compress = compress
        self.content_size = content_size
        self.decompress = decompress


def stdlib_zstd() -> Zstd | None:
    """The standard library's zstd (Python 3.14+), None before."""
    try:
        from compression import zstd
    except ImportError:
        return None
    return Zstd("compression.zstd", lambda data: zstd.compress(data, level=1),
                lambda frame: zstd.get_frame_info(frame).decompressed_size, zstd.decompress)


def zstandard_zstd() -> Zstd | None:
    """The `zstandard` package, None when it is not installed."""
    try:
        import zstandard
    except ImportError:
        return None
    def compress(data: Any) -> bytes:  # a compressor is not shared between threads
        return zstandard.ZstdCompressor(level=1).compress(data)

    def decompress(frame: Any) -> bytes:
        return zstandard.ZstdDecompressor().decompress(frame)

    def content_size(frame: Any) -> int | None:
        size = zstandard.get_frame_parameters(frame).content_size
        return None if size == zstandard.CONTENTSIZE_UNKNOWN else size

    return Zstd("zstandard", compress, content_size, decompress)


_zstd: Zstd | None = None


def library() -> Zstd:
    """The zstd library this Python uses: the standard library's where there is one."""
    global _zstd
    if _zstd is None:
        found = stdlib_zstd() or zstandard_zstd()
        if found is None:
            raise ImportError("no zstd library: Python 3.14+ has compression.zstd, before it `pip install zstandard`")
        _zstd = found
    return _zstd


def compress(data: Any, zstd: Zstd | None = None) -> bytes | None:
    """`data` compressed with its header, None when that would save less than a tenth of it
    (random floats, compressed data): a sample tells first, so incompressible data costs little.
    `zstd`: the library to use (default: this Python's)."""
    zstd = zstd or library()
    size = memoryview(data).nbytes
    sample = data[:SAMPLE]
    if size > SAMPLE and len(zstd.compress(sample)) > len(sample) * MIN_SAVING:
        return None
    packed = zstd.compress(data)
    if len(packed) + HEADER.size > size * MIN_SAVING:
        return None
    return HEADER.pack(SKIPPABLE_MAGIC, 8, HEADER.size + len(packed)) + packed


def declared_length(header: bytes) -> int | None:
    """The file length a compressed blob's header gives (None for no such header)."""
    if len(header) != HEADER.size:
        return None
    magic, frame_size, length = HEADER.unpack(header)
    return length if (magic, frame_size) == (SKIPPABLE_MAGIC, 8) else None


def decompress(packed: Any, size: int, zstd: Zstd | None = None) -> bytes:
    """The `size` bytes of a compressed blob's file content `packed` (header included);
    ValueError when it is not that. `zstd`: the library to use (default: this Python's)."""
    zstd = zstd or library()
    if declared_length(bytes(packed[:HEADER.size])) != len(packed):
        raise ValueError("its header does not give its length")
    frame = packed[HEADER.size:]
    declared = zstd.content_size(frame)
    if declared != size:  # checked before anything is allocated for it
        raise ValueError(f"it holds {declared} bytes, not {size}")
    data = zstd.decompress(frame)
    if len(data) != size:
        raise ValueError(f"it holds {len(data)} bytes, not {size}")
    return data
