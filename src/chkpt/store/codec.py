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
# during a pause (an exit, crash or signal checkpoint), only data that compresses to at most this
# fraction is compressed: zstd level 1 runs at about 400 MB/s a core here, slower than writing to
# the page cache, so the pause is longer than a raw write (docs/benchmarks.md); what pays it back
# is the bytes not flushed to disk nor uploaded afterwards
PAUSE_SAVING = 0.5
# and the sample tried first is smaller: 16 KiB of random floats take 0.03 ms to try, 64 KiB
# 0.09 ms, against about 0.9 ms of CPU time to write a 4 MiB chunk to the page cache
PAUSE_SAMPLE = 16 << 10


class Zstd:
    """One zstd library's calls: a level-1 frame that records its content size, that size read
    from a frame's header (None when it is not recorded), and a frame decompressed into a buffer
    it fills (returning how many bytes the frame held, up to the buffer's size plus one: more
    than the buffer holds is an error)."""

    def __init__(self, name: str, compress: Callable[[Any], bytes], content_size: Callable[[Any], int | None],
                 decompress_into: Callable[[Any, memoryview], int]) -> None:
        self.name = name
        self.compress = compress
        self.content_size = content_size
        self.decompress_into = decompress_into


def stdlib_zstd() -> Zstd | None:
    """The standard library's zstd (Python 3.14+), None before."""
    try:
        from compression import zstd
    except ImportError:
        return None
    def decompress_into(frame: Any, target: memoryview) -> int:
        # one frame of a known size: the library's reader copies through a buffer of its own
        data = zstd.ZstdDecompressor().decompress(frame, max_length=target.nbytes + 1)
        target[:min(len(data), target.nbytes)] = data[:target.nbytes]
        return len(data)

    return Zstd("compression.zstd", lambda data: zstd.compress(data, level=1),
                lambda frame: zstd.get_frame_info(frame).decompressed_size, decompress_into)


def zstandard_zstd() -> Zstd | None:
    """The `zstandard` package, None when it is not installed."""
    try:
        import zstandard
    except ImportError:
        return None
    def compress(data: Any) -> bytes:  # a compressor is not shared between threads
        return zstandard.ZstdCompressor(level=1).compress(data)

    def content_size(frame: Any) -> int | None:
        size = zstandard.get_frame_parameters(frame).content_size
        return None if size == zstandard.CONTENTSIZE_UNKNOWN else size

    def decompress_into(frame: Any, target: memoryview) -> int:  # straight into the target
        done = 0
        with zstandard.ZstdDecompressor().stream_reader(frame) as reader:
            while done < target.nbytes:
                count = reader.readinto(target[done:])
                if not count:
                    break
                done += count
            return done + len(reader.read(1))

    return Zstd("zstandard", compress, content_size, decompress_into)


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


def compress(data: Any, saving: float = MIN_SAVING, sample_size: int = SAMPLE,
             zstd: Zstd | None = None) -> bytes | None:
    """`data` compressed with its header, None when that would take more than `saving` of its
    size (random floats, compressed data): its first `sample_size` bytes tell first, so
    incompressible data costs little. `zstd`: the library to use (default: this Python's)."""
    zstd = zstd or library()
    view = memoryview(data).cast("B")
    size = view.nbytes
    sample = view[:sample_size]
    if size > sample_size and len(zstd.compress(sample)) > sample.nbytes * saving:
        return None
    packed = zstd.compress(view)
    if len(packed) + HEADER.size > size * saving:
        return None
    return HEADER.pack(SKIPPABLE_MAGIC, 8, HEADER.size + len(packed)) + packed


def declared_length(header: bytes) -> int | None:
    """The file length a compressed blob's header gives (None for no such header)."""
    if len(header) != HEADER.size:
        return None
    magic, frame_size, length = HEADER.unpack(header)
    return length if (magic, frame_size) == (SKIPPABLE_MAGIC, 8) else None


def decompress_into(packed: Any, target: memoryview, zstd: Zstd | None = None) -> None:
    """Decompress a compressed blob's file content `packed` (header included) straight into
    `target`, which it must fill exactly; ValueError when it is not that. `zstd`: the library
    to use (default: this Python's)."""
    zstd = zstd or library()
    if declared_length(bytes(packed[:HEADER.size])) != len(packed):
        raise ValueError("its header does not give its length")
    frame = memoryview(packed)[HEADER.size:]
    declared = zstd.content_size(frame)
    if declared != target.nbytes:  # checked before anything is written for it
        raise ValueError(f"it holds {declared} bytes, not {target.nbytes}")
    if zstd.decompress_into(frame, target) != target.nbytes:
        raise ValueError(f"it does not hold {target.nbytes} bytes")
