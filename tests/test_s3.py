"""The shared store on S3: real traced scripts checkpointing to s3:// against moto's S3 server on
localhost, read back from another "machine" (its own HOME and cache dirs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, chkpt, python, write

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (scripts/venv installs it)")
pytest.importorskip("obstore", reason="the s3 extra (obstore) is not installed (scripts/venv installs it)")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def endpoint():
    """moto's S3 server on a free localhost port, for the whole session."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


_buckets = iter(range(10**6))


@pytest.fixture
def bucket(endpoint: str) -> str:
    """A new empty bucket; its s3:// URL (with a prefix)."""
    import obstore
    from obstore.store import S3Store

    name = f"chkpt-test-{os.getpid()}-{next(_buckets)}"
    # moto creates a bucket on a PUT to its name
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT")).close()
    store = S3Store(name, endpoint=endpoint, allow_http=True, region="us-east-1",
                    access_key_id="testing", secret_access_key="testing")
    obstore.list(store).collect()
    return f"s3://{name}/team"


def machine(tmp_path: Path, name: str, endpoint: str, url: str) -> dict[str, str]:
    """The environment of one machine: its own HOME and XDG dirs, the bucket as its store."""
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHKPT", "XDG_", "AWS_"))}
    env.pop("PYTHONPATH", None)
    env.update(CREDENTIALS, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), CHKPT_DIR=url, AWS_ENDPOINT_URL=endpoint,
               PYTHONUNBUFFERED="1")
    return env


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


def test_a_run_on_one_machine_is_listed_and_loaded_on_another(tmp_path, endpoint, bucket, work):
    writer = machine(tmp_path, "node1", endpoint, bucket)
    write(work, "train.py", SCRIPT)
    done = python(["train.py"], writer, work)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 6.0\n"
    assert done.stderr == ""

    laptop = machine(tmp_path, "laptop", endpoint, bucket)
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
