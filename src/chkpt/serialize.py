"""Turns one value into bytes and back, never copying a large buffer it does not have to.

Pickle protocol 5 with out-of-band buffers: numpy arrays (and the blocks of pandas frames)
hand their memory over as PickleBuffers, which the store hashes and writes straight from
the object's own memory. What remains in the pickle stream is small metadata.
"""

from __future__ import annotations

import pickle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


class Serialized:
    """The pickle stream of one value and the raw buffers it refers to, in order."""

    __slots__ = ("buffers", "stream")

    def __init__(self, stream: bytes, buffers: list[memoryview]) -> None:
        self.stream = stream
        self.buffers = buffers

    @property
    def size(self) -> int:
        return len(self.stream) + sum(b.nbytes for b in self.buffers)


def dumps(obj: Any) -> Serialized:
    """Serialize `obj`; raises whatever pickle raises for an unsaveable value."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    try:
        raws = [buffer.raw() for buffer in buffers]
    except BufferError:  # a non-contiguous buffer: keep it in the stream instead
        return Serialized(pickle.dumps(obj, protocol=5), [])
    return Serialized(stream, raws)


def loads(stream: bytes, buffers: Sequence[Any]) -> Any:
    """The value back from its stream and buffers (any buffer-protocol objects)."""
    return pickle.loads(stream, buffers=buffers)
