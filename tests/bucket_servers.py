"""The object stores the shared-store tests run against, each started once per test session (per
xdist worker) on a free localhost port: moto's S3 server, gcp-storage-emulator for Google Cloud
Storage, Azurite for Azure Blob Storage. Each says how a machine reaches it by its cloud's own
conventions (the environment a user would set), makes empty buckets, and names a dead endpoint
and a wrong credential.

gcp-storage-emulator serves GCS's JSON API; obstore (object_store) speaks GCS's XML API, of which
the emulator answers only PUT and GET, without the ETag and Last-Modified headers obstore needs
(HEAD, DELETE, listing and multipart uploads are "501 Not Implemented"; measured with
gcp-storage-emulator 2026.7.19). `GcsXmlApi` serves that XML API over the emulator's own object
storage (objects, their metadata, prefix and delimiter listing): the requests object_store makes,
answered as GCS documents them (https://cloud.google.com/storage/docs/xml-api/overview), with
`x-goog-if-generation-match` preconditions and `x-goog-meta-*` metadata, which fake-gcs-server
does not honour either (object_store's own tests skip them there).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from xml.etree import ElementTree
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
# every variable by which a machine could reach a bucket: cleared from each test machine's environment
CLOUD_VARIABLES = ("AWS_", "GOOGLE_", "GCE_", "STORAGE_EMULATOR_HOST", "CLOUDSDK_", "AZURE_", "AZURITE_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_endpoint() -> str:
    """A localhost address nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


def wait_for(url: str, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Wait until `url` answers at all (any HTTP status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server for {url} exited with status {process.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


_names = itertools.count()


def bucket_name() -> str:
    """A new bucket name, valid on every cloud (3-63 lower-case letters, digits and dashes)."""
    return f"chkpt-{os.getpid()}-{next(_names)}"


class BucketServer:
    """One cloud's object store on localhost."""

    scheme = ""
    bucket_word = "bucket"

    def environment(self) -> dict[str, str]:
        """What a user sets to reach this server with working credentials."""
        raise NotImplementedError

    def dead_environment(self) -> dict[str, str]:
        """The same, with the endpoint down."""
        raise NotImplementedError

    def new_bucket(self) -> str:
        """A new empty bucket: its URL (with a prefix)."""
        raise NotImplementedError

    def wrong_credentials(self, url: str) -> tuple[dict[str, str], str]:
        """An environment with a wrong credential for `url`, and the reason chkpt must give."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


# -- S3: moto --------------------------------------------------------------------------------------

class S3Server(BucketServer):
    scheme = "s3://"
    CREDENTIALS: ClassVar[dict[str, str]] = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"}

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.strict: tuple[subprocess.Popen, str] | None = None

    def environment(self) -> dict[str, str]:
        return dict(self.CREDENTIALS, AWS_ENDPOINT_URL=self.endpoint)

    def dead_environment(self) -> dict[str, str]:
        return dict(self.CREDENTIALS, AWS_ENDPOINT_URL=dead_endpoint())

    def new_bucket(self) -> str:
        name = bucket_name()
        # moto makes a bucket on a PUT to its name
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")).close()
        return f"s3://{name}/team"

    def wrong_credentials(self, url: str) -> tuple[dict[str, str], str]:
        """A second moto server that checks credentials (none are valid there), started on first use."""
        import sys

        if self.strict is None:
            port = free_port()
            process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                       env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0"),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.strict = (process, f"http://127.0.0.1:{port}")
            wait_for(f"{self.strict[1]}/moto-api/", process)
        return (dict(self.CREDENTIALS, AWS_ENDPOINT_URL=self.strict[1]),
                "the access key is not valid (check AWS_ACCESS_KEY_ID / AWS_PROFILE)")

    def stop(self) -> None:
        self.server.stop()
        if self.strict is not None:
            self.strict[0].terminate()
            self.strict[0].wait()


# -- Google Cloud Storage: gcp-storage-emulator's storage, GCS's XML API ---------------------------------

def _xml_error(code: str, message: str) -> bytes:
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>{escape(message)}</Message></Error>").encode()


class _GcsHandler(BaseHTTPRequestHandler):
    """GCS's XML API (storage.googleapis.com/BUCKET/OBJECT): the calls object_store makes."""

    protocol_version = "HTTP/1.1"
    api: GcsXmlApi

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body and "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "application/xml; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parsed = urllib.parse.urlsplit(self.path)
        bucket, _, key = parsed.path.lstrip("/").partition("/")
        return urllib.parse.unquote(bucket), urllib.parse.unquote(key), urllib.parse.parse_qs(
            parsed.query, keep_blank_values=True)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        from gcp_storage_emulator.exceptions import NotFound

        bucket, key, query = self._target()
        body = self._body() if self.command in ("PUT", "POST") else b""
        api = self.api
        with api.lock:
            if api.storage.get_bucket(bucket) is None:
                return self._reply(404, _xml_error("NoSuchBucket", "The specified bucket does not exist."))
            try:
                if not key:
                    if self.command == "GET":
                        return self._reply(200, api.list(bucket, query))
                    return self._reply(405, _xml_error("MethodNotAllowed", "Not allowed on a bucket here."))
                if self.command == "POST" and "uploads" in query:
                    return self._reply(200, api.start_upload(bucket, key, self.headers))
                if self.command == "PUT" and "uploadId" in query:
                    return self._reply(200, headers={"ETag": api.upload_part(query, body)})
                if self.command == "POST" and "uploadId" in query:
                    reply, headers = api.finish_upload(bucket, key, query["uploadId"][0], body)
                    return self._reply(200, reply, headers)
                if self.command == "DELETE" and "uploadId" in query:
                    api.uploads.pop(query["uploadId"][0], None)
                    return self._reply(204)
                if self.command == "PUT":
                    match = self.headers.get("x-goog-if-generation-match")
                    if match is not None and api.generation(bucket, key) != match:
                        return self._reply(412, _xml_error("PreconditionFailed",
                                                           "At least one of the pre-conditions you specified did "
                                                           "not hold."))
                    return self._reply(200, headers=api.store(bucket, key, body, self.headers))
                if self.command in ("GET", "HEAD"):
                    data, headers = api.read(bucket, key, self.headers.get("Range"))
                    return self._reply(206 if "Content-Range" in headers else 200, data, headers)
                if self.command == "DELETE":
                    api.storage.delete_file(bucket, key)
                    return self._reply(204)
            except NotFound:
                return self._reply(404, _xml_error("NoSuchKey", "The specified key does not exist."))
        return self._reply(501, _xml_error("NotImplemented", f"{self.command} {self.path}"))

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _dispatch


class GcsXmlApi:
    """gcp-storage-emulator's object storage, served through GCS's XML API."""

    def __init__(self) -> None:
        from gcp_storage_emulator.storage import Storage

        self.storage = Storage(use_memory_fs=True)
        self.lock = threading.Lock()
        self.uploads: dict[str, dict] = {}  # upload id → {"meta": headers, "parts": {number: bytes}}
        handler = type("Handler", (_GcsHandler,), {"api": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def create_bucket(self, name: str) -> None:
        from gcp_storage_emulator.handlers import buckets

        with self.lock:
            buckets.create_bucket(name, self.storage)

    def generation(self, bucket: str, key: str) -> str:
        """The object's generation; "0" when it is absent (GCS's precondition for "does not exist")."""
        from gcp_storage_emulator.exceptions import NotFound

        try:
            return str(self.storage.get_file_obj(bucket, key)["generation"])
        except NotFound:
            return "0"

    def store(self, bucket: str, key: str, data: bytes, headers) -> dict[str, str]:
        from gcp_storage_emulator.handlers import objects

        metadata = {name[len("x-goog-meta-"):]: value for name, value in headers.items()
                    if name.lower().startswith("x-goog-meta-")}
        resource = objects._make_object_resource(self.endpoint, bucket, key,
                                                 headers.get("Content-Type", "application/octet-stream"),
                                                 str(len(data)), {"metadata": metadata} if metadata else None)
        resource = objects._checksums(data, resource)
        self.storage.create_file(bucket, key, data, resource)
        return self._headers(resource)

    @staticmethod
    def _headers(resource: dict) -> dict[str, str]:
        updated = datetime.strptime(resource["updated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        headers = {"ETag": f'"{base64.b64decode(resource["md5Hash"]).hex()}"',
                   "Last-Modified": email.utils.format_datetime(updated, usegmt=True),
                   "x-goog-generation": str(resource["generation"]),
                   "x-goog-metageneration": str(resource.get("metageneration", "1")),
                   "Content-Type": resource.get("contentType") or "application/octet-stream"}
        for name, value in (resource.get("metadata") or {}).items():
            headers[f"x-goog-meta-{name}"] = str(value)
        return headers

    def read(self, bucket: str, key: str, byte_range: str | None) -> tuple[bytes, dict[str, str]]:
        resource = self.storage.get_file_obj(bucket, key)
        data = self.storage.get_file(bucket, key)
        headers = self._headers(resource)
        if byte_range and byte_range.startswith("bytes="):
            first, _, last = byte_range[len("bytes="):].partition("-")
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
        return data, headers

    def list(self, bucket: str, query: dict[str, list[str]]) -> bytes:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0] or None
        after = query.get("continuation-token", query.get("start-after", [""]))[0]
        limit = int(query.get("max-keys", ["1000"])[0])
        objects, prefixes = self.storage.get_file_list(bucket, prefix or None, delimiter)
        entries = sorted([(o["name"], o) for o in objects] + [(p, None) for p in prefixes], key=lambda e: e[0])
        entries = [e for e in entries if e[0] > after]
        page, truncated = entries[:limit], len(entries) > limit
        parts = [f"<ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'><Name>{escape(bucket)}</Name>"
                 f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
                 f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if truncated:
            parts.append(f"<NextContinuationToken>{escape(page[-1][0])}</NextContinuationToken>")
        for name, resource in page:
            if resource is None:
                parts.append(f"<CommonPrefixes><Prefix>{escape(name)}</Prefix></CommonPrefixes>")
            else:
                etag = base64.b64decode(resource["md5Hash"]).hex()
                parts.append(f"<Contents><Key>{escape(name)}</Key><Generation>{resource['generation']}</Generation>"
                             f"<LastModified>{resource['updated']}</LastModified><ETag>\"{etag}\"</ETag>"
                             f"<Size>{resource['size']}</Size></Contents>")
        parts.append("</ListBucketResult>")
        return "".join(parts).encode()

    def start_upload(self, bucket: str, key: str, headers) -> bytes:
        upload_id = base64.urlsafe_b64encode(os.urandom(12)).decode()
        self.uploads[upload_id] = {"headers": dict(headers.items()), "parts": {}}
        return (f"<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
                f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>").encode()

    def upload_part(self, query: dict[str, list[str]], data: bytes) -> str:
        self.uploads[query["uploadId"][0]]["parts"][int(query["partNumber"][0])] = data
        return f'"{hashlib.md5(data).hexdigest()}"'

    def finish_upload(self, bucket: str, key: str, upload_id: str, body: bytes) -> tuple[bytes, dict[str, str]]:
        upload = self.uploads.pop(upload_id)
        numbers = [int(e.text or 0) for e in ElementTree.fromstring(body).iter() if e.tag.endswith("PartNumber")]
        headers = self.store(bucket, key, b"".join(upload["parts"][n] for n in numbers), upload["headers"])
        return (f"<CompleteMultipartUploadResult><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
                f"<ETag>{headers['ETag']}</ETag></CompleteMultipartUploadResult>").encode(), {
                    "x-goog-generation": headers["x-goog-generation"]}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GcsServer(BucketServer):
    scheme = "gs://"

    def __init__(self) -> None:
        self.api = GcsXmlApi()
        self.endpoint = self.api.endpoint

    def environment(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.api.endpoint}

    def dead_environment(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": dead_endpoint()}

    def new_bucket(self) -> str:
        name = bucket_name()
        self.api.create_bucket(name)
        return f"gs://{name}/team"

    def wrong_credentials(self, url: str) -> tuple[dict[str, str], str]:
        missing = f"/nonexistent-{os.getpid()}/key.json"
        return ({"GOOGLE_APPLICATION_CREDENTIALS": missing, "GOOGLE_BASE_URL": self.api.endpoint},
                f"cannot read the credentials file {missing} (No such file or directory; check "
                "GOOGLE_APPLICATION_CREDENTIALS)")

    def stop(self) -> None:
        self.api.stop()


# -- Azure Blob Storage: Azurite -------------------------------------------------------------------------

AZURITE_ACCOUNT = "devstoreaccount1"  # Azurite's well-known account and key
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_command() -> str | None:
    """Azurite's blob server, as scripts/venv installs it (.venv/azurite), else from PATH."""
    installed = ROOT / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if installed.exists() and shutil.which("node"):
        return str(installed)
    return shutil.which("azurite-blob")


class AzureServer(BucketServer):
    scheme = "az://"
    bucket_word = "container"

    def __init__(self, command: str, log_dir: Path) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log = open(log_dir / "azurite.log", "wb")  # noqa: SIM115 (open while it runs)
        self.process = subprocess.Popen(
            [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
             "--disableTelemetry", "--skipApiVersionCheck", "--silent"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self.endpoint, self.process)

    def connection_string(self, key: str = AZURITE_KEY) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
                f"BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};")

    def environment(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def dead_environment(self) -> dict[str, str]:
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": dead_endpoint()}

    def new_bucket(self) -> str:
        """A new container, made by a Create Container call signed with the account key."""
        name = bucket_name()
        date = email.utils.formatdate(usegmt=True)
        headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
        signed = ("PUT\n" + "\n" * 11 + "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
                  + f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container")
        signature = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), signed.encode(), hashlib.sha256).digest())
        request = urllib.request.Request(
            f"{self.endpoint}/{AZURITE_ACCOUNT}/{name}?restype=container", method="PUT",
            headers={**headers, "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature.decode()}"})
        urllib.request.urlopen(request).close()
        return f"az://{name}/team"

    def wrong_credentials(self, url: str) -> tuple[dict[str, str], str]:
        wrong = base64.b64encode(b"not the account key" * 3).decode()
        return ({"AZURE_STORAGE_CONNECTION_STRING": self.connection_string(wrong)},
                "the account key or SAS token is wrong (check AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN "
                "or AZURE_STORAGE_CONNECTION_STRING)")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        self.log.close()
