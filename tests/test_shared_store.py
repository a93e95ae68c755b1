"""The shared store in a bucket, on each cloud: real traced scripts checkpointing to s3://, gs://
and az:// against servers the tests start on localhost (moto's S3 server, gcp-storage-emulator's
storage behind GCS's XML API, Azurite; see bucket_servers.py), read back from another "machine"
(its own HOME and cache dirs), each machine reaching the bucket by its cloud's own conventions.
Every test runs once per cloud: `test_x[gs]` names the cloud that failed."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from bucket_servers import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    CLOUD_VARIABLES,
    AzureServer,
    BucketServer,
    GcsServer,
    S3Server,
    azurite_command,
)
from conftest import PYTHON, chkpt, python, write

pytest.importorskip("obstore", reason="obstore (the s3/gs/az extra) is not installed (scripts/venv installs it)")


def start_server(cloud: str, log_dir: Path) -> BucketServer:
    """The cloud's server, or a skip saying why it cannot be had here."""
    if cloud == "s3":
        pytest.importorskip("moto.server", reason="moto's S3 server is not installed (scripts/venv installs it)")
        return S3Server()
    if cloud == "gs":
        pytest.importorskip("gcp_storage_emulator",
                            reason="gcp-storage-emulator is not installed (scripts/venv installs it)")
        return GcsServer()
    command = azurite_command()
    if command is None:
        pytest.skip("Azurite is not installed: scripts/venv installs it from the npm registry (it needs Node.js)")
    return AzureServer(command, log_dir)


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """The servers started so far in this session (or xdist worker): each once, stopped at its end."""
    started: dict[str, BucketServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(params=["s3", "gs", "az"])
def server(request, servers, tmp_path_factory) -> BucketServer:
    if request.param not in servers:
        servers[request.param] = start_server(request.param, tmp_path_factory.mktemp(request.param))
    return servers[request.param]


@pytest.fixture
def bucket(server: BucketServer) -> str:
    """A new empty bucket (an Azure container); its URL, with a prefix."""
    return server.new_bucket()


def machine(tmp_path: Path, name: str, reach: dict[str, str], url: str) -> dict[str, str]:
    """The environment of one machine: its own HOME and XDG dirs, the bucket as its store, reached
    with `reach` (a cloud's variables: endpoint and credentials)."""
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHKPT", "XDG_", *CLOUD_VARIABLES))}
    env.pop("PYTHONPATH", None)
    env.update(reach, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), CHKPT_DIR=url, PYTHONUNBUFFERED="1")
    return env


def reaching(env: dict[str, str], reach: dict[str, str]) -> dict[str, str]:
    """The same machine, reaching the bucket another way (the endpoint back up)."""
    return dict({k: v for k, v in env.items() if not k.startswith(CLOUD_VARIABLES)}, **reach)


SCRIPT = """
import numpy as np
import pandas as pd
import chkpt
weights = np.arange(300_000, dtype=np.float64)
table = pd.DataFrame({"a": np.arange(50_000), "b": np.ones(50_000)})
chkpt.snapshot("first")
weights *= 2
print("done", weights[3])
"""


def ls(env: dict[str, str], cwd: Path) -> list[dict]:
    result = chkpt(["ls", "--json"], env, cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_run_on_one_machine_is_listed_and_loaded_on_another(tmp_path, server, bucket, work):
    writer = machine(tmp_path, "node1", server.environment(), bucket)
    write(work, "train.py", SCRIPT)
    done = python(["train.py"], writer, work)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 6.0\n"
    assert done.stderr == ""

    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    listed = ls(laptop, work)
    assert [(r["script_name"], r["status"], r["checkpoints"]) for r in listed] == [("train.py", "finished", 2)]
    table = chkpt(["ls"], laptop, work)
    assert "HOST" in table.stdout and os.uname().nodename in table.stdout

    check = write(work, "check.py", f"""
        import chkpt
        w = chkpt.load("weights", run="{listed[0]['id']}")
        first = chkpt.load("weights", run="{listed[0]['id']}@first")
        print(w[3], first[3], chkpt.load("table").shape)
    """)
    loaded = subprocess.run([PYTHON, str(check)], env=dict(laptop, CHKPT="0"), cwd=work,
                            capture_output=True, text=True, timeout=120)
    assert loaded.stdout == "6.0 3.0 (50000, 2)\n", loaded.stderr


OUTAGE = """
import numpy as np
data = np.arange(200_000) * 3
print("total", int(data.sum()))
"""


def test_an_outage_costs_one_warning_and_chkpt_sync_uploads_the_run_later(tmp_path, server, bucket, work):
    write(work, "job.py", OUTAGE)
    offline = machine(tmp_path, "node1", server.dead_environment(), bucket)
    plain = python(["job.py"], dict(offline, CHKPT="0"), work)
    traced = python(["job.py"], offline, work)
    assert (traced.stdout, traced.returncode) == (plain.stdout, plain.returncode) == ("total 59999700000\n", 0)
    warnings = traced.stderr.splitlines()
    assert len(warnings) == 1, traced.stderr
    assert warnings[0].startswith(f"chkpt: could not upload: {bucket}: the endpoint cannot be reached")
    assert "`chkpt sync` uploads it later" in warnings[0]

    # with the endpoint still down, the run is listed from the staging store, and said to be waiting
    listed = chkpt(["ls"], offline, work)
    assert listed.returncode == 0
    assert listed.stderr == (f"chkpt: {bucket}: the endpoint cannot be reached; showing this machine's cached "
                             "copy and 1 run waiting for upload\n")
    assert "job.py" in listed.stdout
    assert listed.stdout.splitlines()[-1] == (f"1 run of this machine waiting for upload to {bucket} "
                                              "(`chkpt sync` uploads them)")
    [waiting] = json.loads(chkpt(["ls", "--json"], offline, work).stdout)
    assert (waiting["script_name"], waiting["status"], waiting["waiting_upload"]) == ("job.py", "finished", True)

    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    assert ls(laptop, work) == []
    online = reaching(offline, server.environment())
    # reading uploads nothing: doctor and ls on the node tell what waits, the laptop still sees nothing
    doctor = {c["topic"]: c for c in json.loads(chkpt(["doctor", "--json"], online, work).stdout)["checks"]}
    waiting_text = f"1 run of this machine waiting for upload to {bucket} (`chkpt sync` uploads them)"
    assert doctor["uploads"]["text"] == waiting_text
    assert [r.get("waiting_upload") for r in ls(online, work)] == [True]
    assert ls(laptop, work) == []
    synced = chkpt(["sync"], online, work)
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout == f"uploaded 1 run to {bucket}\n"
    assert [r["script_name"] for r in ls(laptop, work)] == ["job.py"]
    assert [r.get("waiting_upload") for r in ls(online, work)] == [None]
    doctor = {c["topic"]: c for c in json.loads(chkpt(["doctor", "--json"], online, work).stdout)["checks"]}
    assert doctor["uploads"]["text"] == f"nothing waiting for upload: {bucket} has every run of this machine"
    again = chkpt(["sync"], online, work)
    assert again.stdout == f"nothing waiting for upload: {bucket} has every run of this machine\n"
    exported = chkpt(["export", "latest", "data", "--to", str(tmp_path / "out")], laptop, work)
    assert exported.returncode == 0, exported.stderr
    import numpy as np

    assert int(np.load(tmp_path / "out" / "data.npy").sum()) == 59999700000


def test_a_missing_bucket_is_one_warning_and_the_script_is_unaffected(tmp_path, server, work):
    write(work, "job.py", OUTAGE)
    url = f"{server.scheme}no-such-bucket-here/x"
    env = machine(tmp_path, "node1", server.environment(), url)
    traced = python(["job.py"], env, work)
    assert (traced.stdout, traced.returncode) == ("total 59999700000\n", 0)
    missing = f"{url}: the {server.bucket_word} does not exist"
    assert traced.stderr.splitlines() == [
        f"chkpt: could not upload: {missing}; the run is kept in {tmp_path}/node1/.cache/chkpt-remote/"
        f"{socket.gethostname()}/{urllib.parse.quote(url, safe='')}/staging and `chkpt sync` uploads it later"]
    listed = chkpt(["ls"], env, work)
    assert listed.returncode == 0
    assert listed.stderr == f"chkpt: {missing}; showing this machine's cached copy and 1 run waiting for upload\n"
    assert "job.py" in listed.stdout


BIG = """
import time
import numpy as np
import chkpt
parts = [np.full(1_000_000, float(i)) for i in range(48)]
chkpt.snapshot("all")
print("saved", flush=True)
time.sleep(60)
"""


def uploader_pid(env: dict[str, str], url: str) -> int | None:
    from urllib.parse import quote

    lock = Path(env["XDG_CACHE_HOME"]) / "chkpt-remote" / socket.gethostname() / quote(url, safe="") / "upload.lock"
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def test_a_node_killed_mid_upload_leaves_the_bucket_consistent_and_the_next_chkpt_finishes(
        tmp_path, server, bucket, work):
    write(work, "big.py", BIG)
    node = machine(tmp_path, "node1", server.environment(), bucket)
    script = subprocess.Popen([PYTHON, "big.py"], env=node, cwd=work, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert script.stdout.readline() == "saved\n"
        deadline = time.monotonic() + 30
        while uploader_pid(node, bucket) is None and time.monotonic() < deadline:
            time.sleep(0.005)
        pid = uploader_pid(node, bucket)
        assert pid is not None
        time.sleep(0.05)  # part of the 384 MB is in the bucket by now
        os.kill(pid, signal.SIGKILL)  # the node dies: its uploader and its script
        script.kill()
    finally:
        script.kill()
        script.wait()

    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    before = ls(laptop, work)
    assert before == [], "the index came before its data, or the upload was not cut short"

    after = ls(node, work)  # that machine lists the run from its staging store: nothing uploaded by reading
    assert [(r["status"], r["checkpoints"], r["waiting_upload"]) for r in after] == [("killed", 1, True)]
    assert ls(laptop, work) == []
    synced = chkpt(["sync"], node, work)  # uploads the rest
    assert synced.stdout == f"uploaded 1 run to {bucket}\n", synced.stderr
    listed = ls(laptop, work)
    assert [(r["status"], r["checkpoints"]) for r in listed] == [("killed", 1)]
    check = write(work, "check.py", """
        import chkpt
        parts = chkpt.load("parts", run="latest")
        print(len(parts), float(parts[47][0]))
    """)
    loaded = subprocess.run([PYTHON, str(check)], env=dict(laptop, CHKPT="0"), cwd=work,
                            capture_output=True, text=True, timeout=120)
    assert loaded.stdout == "48 47.0\n", loaded.stderr


RESUMABLE = """
import numpy as np
total = np.zeros(1000)
for step in range(10):
    total += step
    if step == 6:
        boom = undefined_name
print("sum", float(total[0]))
"""


def test_a_crash_on_one_machine_resumes_on_another(tmp_path, server, bucket, work):
    write(work, "loop.py", RESUMABLE)
    node = machine(tmp_path, "node1", server.environment(), bucket)
    crashed = python(["loop.py"], node, work)
    assert crashed.returncode == 1 and "NameError" in crashed.stderr

    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    write(work, "loop.py", RESUMABLE.replace("boom = undefined_name", "boom = 0"))
    resumed = chkpt(["resume", "loop.py", "--from", "latest@crash"], laptop, work)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[-1] == "sum 45.0"
    statuses = sorted(r["status"] for r in ls(node, work))  # node1 sees the laptop's resumed run too
    assert statuses == ["crashed", "finished"]


def test_a_crash_checkpoint_of_compressible_data_is_uploaded_compressed(tmp_path, server, bucket, work):
    write(work, "codes.py", """
        import numpy as np
        codes = np.random.default_rng(0).integers(0, 10, 3_000_000)   # 24 MB of category codes
        raise SystemError("preempted")
    """)
    node = machine(tmp_path, "node1", server.environment(), bucket)
    crashed = python(["codes.py"], node, work)
    assert crashed.returncode == 1 and "SystemError: preempted" in crashed.stderr
    [run] = ls(node, work)
    assert run["size"] > 24_000_000 and run["stored"] < 0.5 * 24_000_000
    measure = write(work, "measure.py", f"""
        from chkpt.store.objects import ObjectBackend
        print(sum(entry.size for entry in ObjectBackend("{bucket}").list("blobs")))
    """)
    measured = subprocess.run([PYTHON, str(measure)], env=dict(node, CHKPT="0"), cwd=work,
                              capture_output=True, text=True, timeout=120)
    assert measured.returncode == 0, measured.stderr
    assert 0 < int(measured.stdout) < 0.5 * 24_000_000  # the bucket holds compressed bytes
    check = write(work, "check.py", """
        import chkpt, numpy as np
        print((chkpt.load("codes") == np.random.default_rng(0).integers(0, 10, 3_000_000)).all())
    """)
    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    loaded = subprocess.run([PYTHON, str(check)], env=dict(laptop, CHKPT="0"), cwd=work,
                            capture_output=True, text=True, timeout=120)
    assert loaded.stdout == "True\n", loaded.stderr


# writer.py N STEPS [hold]: with "hold", the run then goes on until the file `release` exists
# (at most 2 minutes), so that it is live for as long as the test needs, however slow the machine
WRITER = """
import os, sys, time
import numpy as np
import chkpt
shared = np.arange(400_000, dtype=np.float64)  # the same bytes on every machine: stored once
own = np.full(100_000, float(sys.argv[1]))
for step in range(int(sys.argv[2])):
    own += 1
    chkpt.snapshot(f"step {step}")
    time.sleep(0.25)
held = time.time()
while sys.argv[3:] == ["hold"] and not os.path.exists("release") and time.time() - held < 120:
    time.sleep(0.05)
print("done", sys.argv[1])
"""


def loads_everywhere(env: dict[str, str], work: Path) -> list[str]:
    """Load every variable of every listed checkpoint; the failures."""
    check = write(work, "every.py", """
        import chkpt
        failures = []
        for run in chkpt.runs():
            for checkpoint in run.checkpoints:
                for name in checkpoint.names:
                    try:
                        checkpoint.load(name)
                    except Exception as exc:
                        failures.append(f"{checkpoint.ref} {name}: {exc}")
        print(len(chkpt.runs()), failures)
    """)
    done = subprocess.run([PYTHON, str(check)], env=dict(env, CHKPT="0"), cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_concurrent_writers_and_gc_on_the_bucket(tmp_path, server, bucket, work):
    write(work, "writer.py", WRITER)
    old = machine(tmp_path, "old", server.environment(), bucket)
    assert python(["writer.py", "0", "2"], old, work).returncode == 0  # a finished run, for gc to evict
    [old_run] = ls(old, work)
    nodes = [machine(tmp_path, f"node{i}", server.environment(), bucket) for i in (1, 2)]
    writers = [subprocess.Popen([PYTHON, "writer.py", str(i), "40", "hold"], env=env, cwd=work,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i, env in enumerate(nodes, 1)]
    admin = machine(tmp_path, "admin", server.environment(), bucket)
    try:
        deadline = time.monotonic() + 60
        while len(ls(admin, work)) < 3 and time.monotonic() < deadline:  # both writers are live in the bucket
            time.sleep(0.1)
        removed = []
        for _ in range(3):  # gc while they write: the live runs and their data stay
            collected = chkpt(["gc", "--older-than", "0s"], admin, work)
            assert collected.returncode == 0, collected.stderr
            removed += [line.split()[2] for line in collected.stdout.splitlines() if line.startswith("removed run")]
        assert removed == [old_run["id"]]  # the old run, and only it
        listed = ls(admin, work)
        assert sorted(r["status"] for r in listed) == ["running", "running"]
        assert loads_everywhere(admin, work).endswith(" []\n")
    finally:
        (work / "release").touch()
        outputs = [w.communicate(timeout=240) for w in writers]
    assert [o[0] for o in outputs] == ["done 1\n", "done 2\n"], outputs
    assert [o[1] for o in outputs] == ["", ""]
    listed = ls(admin, work)
    assert sorted((r["status"], r["checkpoints"]) for r in listed) == [("finished", 10), ("finished", 10)]
    assert loads_everywhere(admin, work) == "2 []\n"


def test_wrong_credentials_cost_one_warning_and_doctor_names_them(tmp_path, server, bucket, work):
    write(work, "job.py", OUTAGE)
    wrong, reason = server.wrong_credentials(bucket)
    env = machine(tmp_path, "node1", wrong, bucket)
    plain = python(["job.py"], dict(env, CHKPT="0"), work)
    traced = python(["job.py"], env, work)
    assert (traced.stdout, traced.returncode) == (plain.stdout, plain.returncode)
    [warning] = traced.stderr.splitlines()
    assert warning.startswith(f"chkpt: could not upload: {bucket}: {reason}; the run is kept in "), warning
    doctor = chkpt(["doctor"], env, work)
    assert doctor.returncode == 1
    assert f"bucket    PROBLEM  {bucket}: {reason}\n" in doctor.stdout


def test_doctor_names_the_cloud_and_credentials_and_checks_the_bucket_and_the_clock(tmp_path, server, bucket, work):
    env = machine(tmp_path, "node1", server.environment(), bucket)
    doctor = chkpt(["doctor", "--json"], env, work)
    checks = {c["topic"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["cloud"]["text"] == {
        "s3://": f"Amazon S3 at {server.endpoint}, credentials: AWS_ACCESS_KEY_ID",
        "gs://": f"Google Cloud Storage at {server.endpoint}, credentials: none, for an emulator "
                 "(STORAGE_EMULATOR_HOST)",
        "az://": f"Azure Blob Storage at {server.endpoint}/{AZURITE_ACCOUNT}, credentials: "
                 f"AZURE_STORAGE_CONNECTION_STRING, account {AZURITE_ACCOUNT}",
    }[server.scheme]
    assert checks["bucket"] == {"topic": "bucket", "ok": True, "text": f"reachable and writable: {bucket}"}
    assert checks["clock"]["ok"], checks["clock"]
    assert checks["uploads"]["text"] == f"nothing waiting for upload: {bucket} has every run of this machine"


def other_convention(server: BucketServer, url: str, home: Path) -> tuple[dict[str, str], str]:
    """Another way users of this cloud reach it (a credentials file, their CLI's variables), and
    another spelling of the bucket's URL that they paste."""
    name, _, prefix = url.removeprefix(server.scheme).partition("/")
    home.mkdir(parents=True, exist_ok=True)
    if server.scheme == "s3://":  # the profile of ~/.aws, its endpoint_url included
        aws = home / ".aws"
        aws.mkdir()
        (aws / "credentials").write_text("[team]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
        (aws / "config").write_text(f"[profile team]\nregion = us-east-1\nendpoint_url = {server.endpoint}\n")
        return {"AWS_PROFILE": "team"}, url + "/"
    if server.scheme == "gs://":  # Google's client libraries' emulator switch, as host:port
        return {"STORAGE_EMULATOR_HOST": server.endpoint.removeprefix("http://")}, f"gcs://{name}/{prefix}"
    # the Azure CLI's variable names, the emulator switch, and the account in an abfss:// URL
    return ({"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": server.endpoint,
             "AZURE_STORAGE_ACCOUNT": AZURITE_ACCOUNT, "AZURE_STORAGE_KEY": AZURITE_KEY},
            f"abfss://{name}@{AZURITE_ACCOUNT}.dfs.core.windows.net/{prefix}")


def test_each_clouds_conventions_for_credentials_and_urls_reach_the_same_store(tmp_path, server, bucket, work):
    reach, spelled = other_convention(server, bucket, tmp_path / "node1")
    env = machine(tmp_path, "node1", reach, spelled)
    write(work, "job.py", OUTAGE)
    traced = python(["job.py"], env, work)
    assert traced.stderr == ""
    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    assert [r["script_name"] for r in ls(laptop, work)] == ["job.py"]
    # the store is named by its cloud's usual scheme, whatever the spelling: gcs:// is gs://
    named = {"s3://": bucket, "gs://": bucket, "az://": spelled.replace("abfss://", "az://")}[server.scheme]
    assert [r["script_name"] for r in ls(dict(env, CHKPT_DIR=named), work)] == ["job.py"]
    synced = chkpt(["sync", spelled], env, work)
    assert synced.stdout == f"nothing waiting for upload: {named} has every run of this machine\n", synced.stderr


def test_the_read_cache_keeps_the_mtime_each_file_had_on_its_writers_machine(tmp_path, server, bucket, work):
    """The mtime travels as object metadata (chkpt-mtime; chkpt_mtime on Azure, whose metadata
    names are identifiers): a record's summary is current in the cache exactly when it was there."""
    write(work, "job.py", OUTAGE)
    node = machine(tmp_path, "node1", server.environment(), bucket)
    assert python(["job.py"], node, work).returncode == 0
    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    [run] = ls(laptop, work)
    [staging] = (Path(node["XDG_CACHE_HOME"]) / "chkpt-remote").glob("*/*/staging")
    [cache] = (Path(laptop["XDG_CACHE_HOME"]) / "chkpt-remote").glob("*/*/cache")
    record = Path("runs", run["id"], "run.json")
    assert (cache / record).stat().st_mtime == (staging / record).stat().st_mtime


def test_a_script_that_saves_nothing_imports_and_makes_nothing_of_the_shared_store(tmp_path, server, bucket, work):
    write(work, "tiny.py", "print(sum(range(10)))\n")
    env = machine(tmp_path, "node1", server.environment(), bucket)
    traced = python(["-X", "importtime", "tiny.py"], env, work)
    assert traced.stdout == "45\n"
    loaded = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if line.startswith("import time:")}
    shared_store = ("obstore", "chkpt.sync", "chkpt.shared", "chkpt.store", "chkpt.writer")
    assert not {m for m in loaded if m.startswith(shared_store)}
    assert not (Path(env["XDG_CACHE_HOME"]) / "chkpt-remote").exists()


def test_rm_deletes_a_run_from_the_bucket_and_pins_are_refused(tmp_path, server, bucket, work):
    # random floats: stored raw (compressible data would be stored in a fraction of its size)
    write(work, "job.py", "import sys, numpy as np\ndata = np.random.default_rng(int(sys.argv[1])).random(200_000)\n")
    node = machine(tmp_path, "node1", server.environment(), bucket)
    assert python(["job.py", "2"], node, work).returncode == 0
    assert python(["job.py", "3"], node, work).returncode == 0
    laptop = machine(tmp_path, "laptop", server.environment(), bucket)
    first, second = sorted(ls(laptop, work), key=lambda r: r["started"])
    removed = chkpt(["rm", first["id"]], laptop, work)
    assert removed.returncode == 0, removed.stderr
    # its data was uploaded just now: the bucket keeps it a day (a writer may be about to refer to it)
    assert re.fullmatch(rf"removed run {first['id']} job\.py \(frees 0 B now; \d\.\d MiB more can go at a chkpt gc "
                        r"from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(a bucket keeps data a day after its upload\)\)\n",
                        removed.stdout), removed.stdout
    assert [r["id"] for r in ls(node, work)] == [second["id"]]  # gone for every machine
    collected = chkpt(["gc"], laptop, work)  # its data is still young: gc says when it can go
    assert re.search(r"^freed 0 B; .*\n\d\.\d MiB that no run refers to any more can go at a chkpt gc from \d{4}-",
                     collected.stdout, re.M), collected.stdout
    pinned = chkpt(["pin", second["id"]], laptop, work)
    assert pinned.returncode == 2 and "pins are per machine" in pinned.stderr


def test_the_read_cache_stays_under_cache_size(tmp_path, server, bucket, work):
    write(work, "two.py", """
        import numpy as np
        first = np.random.default_rng(1).random(400_000)    # 3.2 MB each, stored raw (random)
        second = np.random.default_rng(2).random(400_000)
    """)
    node = machine(tmp_path, "node1", server.environment(), bucket)
    assert python(["two.py"], node, work).returncode == 0
    laptop = dict(machine(tmp_path, "laptop", server.environment(), bucket), CHKPT_CACHE_SIZE="4MB", CHKPT="0")
    for name, seed in (("first", 1), ("second", 2)):
        done = subprocess.run([PYTHON, "-c", f"import chkpt, numpy as np; print((chkpt.load({name!r}) == "
                               f"np.random.default_rng({seed}).random(400_000)).all())"], env=laptop,
                              cwd=work, capture_output=True, text=True, timeout=120)
        assert done.stdout == "True\n", done.stderr
    [cache] = (Path(laptop["XDG_CACHE_HOME"]) / "chkpt-remote").glob("*/*/cache")
    held = sum(p.stat().st_size for p in (cache / "blobs").rglob("*") if p.is_file())
    assert 3_200_000 <= held <= 4_000_000  # the second array's data; the first's made room for it
