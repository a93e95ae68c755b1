"""How the store cuts and compresses large buffers: the measurements behind its choices.

- chunking: fixed-size chunks against content-defined chunking (FastCDC, the `fastcdc`
  package's compiled version, 4 MiB average): chunking speed, and the bytes a second save
  writes after an in-place change of one element, 1 % appended, and 1 % inserted in the middle;
- codecs, per 4 MiB chunk: stdlib zlib level 1, lz4 (`lz4.frame`), zstd level 1 and 3
  (`zstandard`) on floats, smooth floats, integer codes, pickled strings and random bytes:
  compression and decompression speed and the stored/raw ratio.

Optional packages that are missing are reported as such. Takes about a minute.

    python benchmarks/bench_chunks.py [--mib 256]
"""

from __future__ import annotations

import argparse
import pickle
import time
import zlib

import numpy as np
import xxhash

CHUNK = 4 << 20


def fixed_chunks(data: memoryview) -> list[str]:
    return [xxhash.xxh3_128_hexdigest(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]


def cdc_chunks(data: memoryview) -> list[str]:
    import fastcdc

    cuts = fastcdc.fastcdc(data, min_size=CHUNK // 4, avg_size=CHUNK, max_size=CHUNK * 4, fat=False)
    return [xxhash.xxh3_128_hexdigest(data[c.offset:c.offset + c.length]) for c in cuts]


def new_bytes(chunker, before: bytes, after: bytes) -> int:
    known = set(chunker(memoryview(before)))
    view = memoryview(after)
    digests = chunker(view)
    if chunker is fixed_chunks:
        lengths = [min(CHUNK, len(view) - i) for i in range(0, len(view), CHUNK)]
    else:
        import fastcdc

        lengths = [c.length for c in fastcdc.fastcdc(view, min_size=CHUNK // 4, avg_size=CHUNK,
                                                       max_size=CHUNK * 4, fat=False)]
    return sum(n for d, n in zip(digests, lengths, strict=True) if d not in known)


def measure_chunking(mib: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.random(mib * (1 << 20) // 8)
    changed = base.copy()
    changed[len(base) // 2] += 1
    appended = np.concatenate([base, rng.random(len(base) // 100)])
    middle = len(base) // 2
    inserted = np.concatenate([base[:middle], rng.random(len(base) // 100), base[middle:]])
    print(f"\nchunking a {mib} MiB float64 array (4 MiB chunks / FastCDC avg 4 MiB)")
    print(f"{'':24}{'MB/s':>10}{'in-place 1 elt':>16}{'1% appended':>14}{'1% inserted':>14}")
    for name, chunker in (("fixed", fixed_chunks), ("content-defined", cdc_chunks)):
        try:
            start = time.perf_counter()
            chunker(memoryview(base).cast("B"))
            speed = base.nbytes / (time.perf_counter() - start) / 1e6
        except ImportError:
            print(f"{name:24}(fastcdc not installed)")
            continue
        figures = [new_bytes(chunker, base.tobytes(), other.tobytes()) / (1 << 20)
                   for other in (changed, appended, inserted)]
        print(f"{name:24}{speed:10.0f}" + "".join(f"{f:13.1f} MiB" if i == 0 else f"{f:10.1f} MiB"
                                                for i, f in enumerate(figures)))


def codecs() -> dict[str, tuple]:
    found: dict[str, tuple] = {"zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress)}
    try:
        import lz4.frame

        found["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    except ImportError:
        print("(lz4 not installed)")
    try:
        import zstandard

        for level in (1, 3):
            compressor = zstandard.ZstdCompressor(level=level)
            found[f"zstd-{level}"] = (compressor.compress, zstandard.ZstdDecompressor().decompress)
    except ImportError:
        print("(zstandard not installed)")
    return found


def samples() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    n = CHUNK // 8
    words = np.array([f"customer-{i % 5000:05d}" for i in range(200_000)], dtype=object)
    return {
        "random floats": rng.random(n).tobytes(),
        "smooth floats": np.round(np.cumsum(rng.normal(size=n)), 2).tobytes(),
        "integer codes": rng.integers(0, 50, n).astype(np.int64).tobytes(),
        "pickled strings": pickle.dumps(words, protocol=5)[:CHUNK],
        "random bytes": rng.bytes(CHUNK),
    }


def measure_codecs() -> None:
    print("\ncodecs on one 4 MiB chunk (compress MB/s, decompress MB/s, stored/raw)")
    found = codecs()
    print(f"{'':18}" + "".join(f"{name:>22}" for name in found))
    for label, data in samples().items():
        cells = []
        for compress, decompress in found.values():
            start = time.perf_counter()
            for _ in range(3):
                packed = compress(data)
            c_speed = 3 * len(data) / (time.perf_counter() - start) / 1e6
            start = time.perf_counter()
            for _ in range(3):
                decompress(packed)
            d_speed = 3 * len(data) / (time.perf_counter() - start) / 1e6
            cells.append(f"{c_speed:6.0f} {d_speed:6.0f} {len(packed) / len(data):6.2f}")
        print(f"{label:18}" + "".join(f"{cell:>22}" for cell in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="array size for the chunking figures")
    args = parser.parse_args()
    measure_chunking(args.mib)
    measure_codecs()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
