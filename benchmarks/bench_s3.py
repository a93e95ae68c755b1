"""The shared store on S3, against moto's S3 server on localhost (its own process), side by side:

- the main thread's pause of a checkpoint with `dir = "s3://…"` against a local store (the
  manifest's `pause`), and the wall time of the script with each (an s3:// run's end waits for
  its upload, `upload_wait`);
- end-to-end upload throughput: `chkpt sync` of a run that was written offline, against obstore's
  plain parallel upload of the same files (what a user would script instead);
- listing 1,000 runs from another machine: `chkpt ls` with an empty read cache, then again;
- with `--libraries`, the library choice: obstore against boto3 on the same bytes, and their
  import times.

moto is much slower than a real S3 endpoint per request and is itself Python sharing the
machine's 2 cores, so the ratios matter more than the absolute figures.

    python benchmarks/bench_s3.py [--mib 256] [--runs 1000] [--libraries]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from bench_listing import make_store

BIN = os.path.dirname(sys.executable)
CHKPT = os.path.join(BIN, "chkpt")
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

SCRIPT = """
import time
import numpy as np
import chkpt
arrays = [np.random.default_rng(i).random({per} // 8) for i in range({count})]
chkpt.snapshot("data")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/moto-api/").close()
            return server, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto's server did not start")


def make_bucket(endpoint: str, name: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT")).close()


def machine(root: Path, name: str, endpoint: str, store: str) -> dict[str, str]:
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHKPT", "XDG_", "AWS_"))}
    env.update(KEYS, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
               CHKPT_DIR=store, AWS_ENDPOINT_URL=endpoint)
    return env


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{args} failed: {done.stderr}")
    return elapsed, done


def pause_of(env: dict[str, str], cwd: Path) -> float:
    _, shown = timed([CHKPT, "show", "latest", "--json"], env, cwd)
    return json.loads(shown.stdout)["checkpoints"][-1]["pause"]


def bench_pause(root: Path, endpoint: str, mib: int) -> None:
    """No s3 code runs in the pause (the uploader is another process, started after the commit):
    the two columns should differ only by noise."""
    count = 32
    per = mib * (1 << 20) // count
    work = root / "work"
    work.mkdir()
    (work / "job.py").write_text(SCRIPT.format(per=per, count=count))
    rounds = 5
    print(f"## pause and wall time: chkpt.snapshot() of {mib} MiB in {count} arrays (alternated, best of {rounds})")
    pauses: dict[str, list[float]] = {"local": [], "s3": []}
    walls: dict[str, list[float]] = {"local": [], "s3": []}
    for attempt in range(rounds):
        for kind in ("local", "s3"):
            store = str(root / f"local-{attempt}") if kind == "local" else f"s3://pause/{attempt}"
            env = machine(root, f"{kind}-{attempt}", endpoint, store)
            wall, _ = timed([sys.executable, "job.py"], env, work)
            walls[kind].append(wall)
            pauses[kind].append(pause_of(env, work))
    figures = {kind: (min(pauses[kind]), min(walls[kind])) for kind in pauses}
    for kind, (pause, wall) in figures.items():
        print(f"{kind:6s} pause {pause * 1000:7.1f} ms (median {sorted(pauses[kind])[rounds // 2] * 1000:6.1f})"
              f"   script wall {wall:6.2f} s")
    plain, _ = timed([sys.executable, "job.py"], dict(machine(root, "plain", endpoint, ""), CHKPT="0"), work)
    print(f"plain python (CHKPT=0) wall {plain:6.2f} s")
    print(f"pause s3/local {figures['s3'][0] / figures['local'][0]:.2f}x; "
          f"wall s3/local {figures['s3'][1] / figures['local'][1]:.2f}x (the s3 run's end waits for its upload)")


def bench_upload(root: Path, endpoint: str, mib: int, rounds: int = 2) -> None:
    import obstore
    from obstore.store import S3Store

    count = 32
    per = mib * (1 << 20) // count
    work = root / "work"
    (work / "job.py").write_text(SCRIPT.format(per=per, count=count))
    print(f"\n## upload: {mib} MiB written offline, then `chkpt sync`, against obstore's plain upload "
          f"(alternated, best of {rounds})")
    store = S3Store("upload", endpoint=endpoint, allow_http=True, region="us-east-1",
                    access_key_id="bench", secret_access_key="bench")
    from concurrent.futures import ThreadPoolExecutor

    synced, plain = [], []
    for attempt in range(rounds):
        offline = machine(root, f"offline-{attempt}", "http://127.0.0.1:1", f"s3://upload/chkpt-{attempt}")
        subprocess.run([sys.executable, "job.py"], env=offline, cwd=work, capture_output=True, check=True)
        staging = next((root / f"offline-{attempt}/.cache/chkpt-remote" / socket.gethostname()).iterdir()) / "staging"
        files = [p for p in (staging / "blobs").rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p, a=attempt: obstore.put(store, f"plain-{a}/{p.name}", p), files))
        plain.append(time.perf_counter() - start)
        elapsed, done = timed([CHKPT, "sync"], dict(offline, AWS_ENDPOINT_URL=endpoint), work)
        assert done.stdout.startswith("uploaded 1 run"), done.stdout
        synced.append(elapsed)
    print(f"chkpt sync (a process: start-up, listing, data, manifest, index) {min(synced):6.2f} s "
          f"{total / min(synced) / (1 << 20):7.0f} MiB/s")
    print(f"obstore put of the same {len(files)} files, 8 threads, in-process  {min(plain):6.2f} s "
          f"{total / min(plain) / (1 << 20):7.0f} MiB/s")
    print(f"chkpt sync / plain: {min(synced) / min(plain):.2f}x the time")


def bench_listing(root: Path, endpoint: str, runs: int) -> None:
    print(f"\n## listing {runs} runs (3 checkpoints each) from another machine")
    writer = machine(root, "lister", endpoint, "s3://listing/chkpt")
    home = Path(writer["XDG_CACHE_HOME"]) / "chkpt-remote"
    from urllib.parse import quote

    staging = home / socket.gethostname() / quote("s3://listing/chkpt", safe="") / "staging"
    staging.parent.mkdir(parents=True)
    make_store(str(staging), runs, 3, legacy=False)
    elapsed, _ = timed([CHKPT, "sync"], writer, root)
    print(f"uploading them (chkpt sync): {elapsed:.2f} s")
    laptop = machine(root, "laptop", endpoint, "s3://listing/chkpt")
    cold, done = timed([CHKPT, "ls", "-n", "0"], laptop, root)
    warm, _ = timed([CHKPT, "ls", "-n", "0"], laptop, root)
    local, _ = timed([CHKPT, "ls", "-n", "0"], dict(laptop, CHKPT_DIR=str(staging)), root)
    rows = len(done.stdout.splitlines()) - 2
    print(f"chkpt ls, empty read cache: {cold:6.2f} s ({rows} runs listed)")
    print(f"chkpt ls again (one LIST):  {warm:6.2f} s")
    print(f"chkpt ls of the same runs in a local store: {local:6.2f} s  (s3 warm/local {warm / local:.2f}x)")


def bench_libraries(endpoint: str) -> None:
    """The candidates for the s3 extra, on the same bytes and server: obstore and boto3 (s3fs is
    aiobotocore underneath); import time in a fresh interpreter, best of 3."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import obstore
    from obstore.store import S3Store

    print("\n## libraries: the same bytes to the same server (best of 3), and import time")
    make_bucket(endpoint, "libs")
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                          region_name="us-east-1")
    store = S3Store("libs", endpoint=endpoint, allow_http=True, region="us-east-1",
                    access_key_id="bench", secret_access_key="bench")
    data = os.urandom(64 << 20)
    parts = [data[i:i + (4 << 20)] for i in range(0, len(data), 4 << 20)]
    small = [b"x" * 300] * 200
    pool = ThreadPoolExecutor(8)
    cases = {
        "16 x 4 MiB, 8 threads": (
            lambda: list(pool.map(lambda ip: client.put_object(Bucket="libs", Key=f"b/{ip[0]}", Body=ip[1]),
                                  enumerate(parts))),
            lambda: list(pool.map(lambda ip: obstore.put(store, f"o/{ip[0]}", ip[1]), enumerate(parts)))),
        "1 x 64 MiB": (lambda: client.put_object(Bucket="libs", Key="b1", Body=data),
                       lambda: obstore.put(store, "o1", data)),
        "200 x 300 B, 8 threads": (
            lambda: list(pool.map(lambda ip: client.put_object(Bucket="libs", Key=f"bs/{ip[0]}", Body=ip[1]),
                                  enumerate(small))),
            lambda: list(pool.map(lambda ip: obstore.put(store, f"os/{ip[0]}", ip[1]), enumerate(small)))),
        "get 16 x 4 MiB, 8 threads": (
            lambda: list(pool.map(lambda i: client.get_object(Bucket="libs", Key=f"b/{i}")["Body"].read(),
                                  range(16))),
            lambda: list(pool.map(lambda i: bytes(obstore.get(store, f"o/{i}").bytes()), range(16)))),
    }
    for name, (with_boto, with_obstore) in cases.items():
        times = []
        for function in (with_boto, with_obstore):
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                function()
                best = min(best, time.perf_counter() - start)
            times.append(best)
        print(f"{name:28s} boto3 {times[0] * 1000:7.0f} ms   obstore {times[1] * 1000:7.0f} ms   "
              f"obstore/boto3 {times[1] / times[0]:.2f}x")
    pool.shutdown()
    for module in ("boto3", "obstore"):
        best = float("inf")
        for _ in range(3):
            done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                                  capture_output=True, text=True, env=dict(os.environ, CHKPT="0"))
            best = min(best, int(done.stderr.strip().splitlines()[-1].split("|")[1]) / 1000)
        print(f"import {module}: {best:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--libraries", action="store_true", help="also compare obstore with boto3 (moto brings it)")
    args = parser.parse_args()
    server, endpoint = start_moto()
    root = Path(tempfile.mkdtemp(prefix="chkpt-bench-s3-"))
    try:
        for bucket in ("pause", "upload", "listing"):
            make_bucket(endpoint, bucket)
        bench_pause(root, endpoint, args.mib)
        bench_upload(root, endpoint, args.mib)
        bench_listing(root, endpoint, args.runs)
        if args.libraries:
            bench_libraries(endpoint)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
