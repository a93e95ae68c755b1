"""A store in a bucket (through obstore): the backend protocol over object calls, each failure
one clear line.

A URL scheme is its client and its credentials (`_CLIENTS`): `s3://bucket/prefix` takes the
usual AWS settings — `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
`AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`/`AWS_REGION`, and, when the keys are not in the
environment, the static keys, region and `endpoint_url` of the profile `AWS_PROFILE` (else
`default`) in `~/.aws/credentials` and `~/.aws/config`. A bucket has no folders and no
locks: objects are whole once written, and a run's liveness is a lease (cache.py). obstore is
imported on first use only (never at start-up).
"""

from __future__ import annotations

import os

from chkpt.store.backend import Entry
from chkpt.store.errors import RemoteError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    from chkpt.store.files import Descriptor

MTIME = "chkpt-mtime"  # user metadata: the file's mtime in the store it was uploaded from


def _profile_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Static keys, region and endpoint of the AWS profile, from the shared files."""
    import configparser

    profile = environ.get("AWS_PROFILE", "default")
    found: dict[str, str] = {}
    files = [
        (environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), profile),
        (environ.get("AWS_CONFIG_FILE", "~/.aws/config"), profile if profile == "default" else f"profile {profile}"),
    ]
    for path, section in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(os.path.expanduser(path))
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.has_section(section):
            for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region",
                        "endpoint_url"):
                value = parser.get(section, key, fallback="").strip()
                if value and key not in found:
                    found[key] = value
    return found


def _s3_client(bucket: str, prefix: str, environ: Mapping[str, str]) -> Any:
    """An S3 bucket, with AWS's conventions for credentials and endpoints."""
    import datetime

    from obstore.store import S3Store

    settings: dict[str, Any] = {}
    if not environ.get("AWS_ACCESS_KEY_ID"):
        profile = _profile_settings(environ)
        for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
            if key in profile:
                settings[key] = profile[key]
        if "region" in profile and not (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")):
            settings["aws_region"] = profile["region"]
        if "endpoint_url" in profile and not environ.get("AWS_ENDPOINT_URL"):
            settings["aws_endpoint"] = profile["endpoint_url"]
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        settings["aws_region"] = region
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or settings.get("aws_endpoint")
    if endpoint:
        settings["aws_endpoint"] = endpoint
    settings.setdefault("aws_region", "us-east-1")
    client_options = {"connect_timeout": "5s", "timeout": "120s",
                      "allow_http": bool(endpoint and endpoint.startswith("http://"))}
    retry = {"max_retries": 2, "retry_timeout": datetime.timedelta(seconds=20)}
    return S3Store(bucket, prefix=prefix or None, config=settings, client_options=client_options, retry_config=retry)


# URL scheme → (the client of a bucket and prefix, the hint when no credentials are usable)
_CLIENTS: dict[str, tuple[Callable[[str, str, Mapping[str, str]], Any], str]] = {
    "s3://": (_s3_client, "set AWS_ACCESS_KEY_ID or AWS_PROFILE"),
}


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, prefix) of "s3://bucket/prefix"; RemoteError for a URL without a bucket."""
    scheme = next((s for s in _CLIENTS if url.startswith(s)), None)
    if scheme is None:
        raise RemoteError(f"{url} is not a bucket URL ({', '.join(s + 'bucket/prefix' for s in _CLIENTS)})")
    bucket, _, prefix = url[len(scheme):].partition("/")
    if not bucket:
        raise RemoteError(f"{url} names no bucket (expected {scheme}bucket/prefix)")
    return scheme, bucket, prefix.strip("/")


def _problem(exc: BaseException, url: str, credentials: str) -> RemoteError:
    """The one-line reason for an obstore failure."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    for code, meaning in [
        ("NoSuchBucket", "the bucket does not exist"),
        ("InvalidAccessKeyId", "the access key is not valid (check AWS_ACCESS_KEY_ID / AWS_PROFILE)"),
        ("SignatureDoesNotMatch", "the secret key is wrong (check AWS_SECRET_ACCESS_KEY / AWS_PROFILE)"),
        ("AccessDenied", "access denied by the server"),
        ("403 Forbidden", "access denied by the server (check the credentials)"),
        ("error sending request", "the endpoint cannot be reached"),
        ("Connection refused", "the endpoint cannot be reached"),
        ("dns error", "the endpoint's host name is unknown"),
        ("timed out", "the endpoint did not answer in time"),
        ("credential", f"no usable credentials ({credentials})"),
    ]:
        if code.lower() in text.lower():
            return RemoteError(f"{url}: {meaning}")
    return RemoteError(f"{url}: {first[:200]}")


def _timestamp(when: Any) -> float:
    return float(when.timestamp())  # a datetime


def _mtime(attributes: dict[str, Any]) -> float | None:
    try:
        return float(attributes[MTIME])
    except (KeyError, TypeError, ValueError):
        return None


class BytesReader:
    """A downloaded object, read as a store file is (see backend.Reader)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self) -> bytes:
        return self.data

    def read_into(self, target: memoryview) -> int:
        count = min(target.nbytes, self.size)
        target[:count] = self.data[:count]
        return count

    def map(self) -> Any:
        return bytearray(self.data)

    def close(self) -> None:
        self.data = b""

    def __enter__(self) -> BytesReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ObjectBackend:
    """The bucket and prefix of one store URL (see backend.Backend)."""

    shared = True

    def __init__(self, url: str) -> None:
        self.url = self.location = url.rstrip("/")
        self.scheme, self.bucket, self.prefix = split_url(self.url)
        self._client: Any = None

    def where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        make, credentials = _CLIENTS[self.scheme]
        if self._client is None:
            try:
                import obstore  # noqa: F401
            except ImportError:
                raise RemoteError(f"{self.url} needs the {self.scheme[:-3]} extra: "
                                  f"pip install 'chkpt[{self.scheme[:-3]}]'") from None
            try:
                self._client = make(self.bucket, self.prefix, os.environ)
            except Exception as exc:
                raise _problem(exc, self.url, credentials) from None
        try:
            return function(self._client, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, FileNotFoundError) and "NoSuchBucket" not in str(exc):
                raise FileNotFoundError(f"{self.url}/{args[0] if args else ''} is missing") from None
            raise _problem(exc, self.url, credentials) from None

    # -- the protocol ---------------------------------------------------------------------------

    def check_root(self) -> None:
        """A bucket has no root to check: what it holds is checked when read."""

    def get(self, key: str) -> bytes:
        return self.get_with_mtime(key)[0]

    def get_with_mtime(self, key: str) -> tuple[bytes, float | None]:
        """The object's bytes and the mtime it was uploaded with (None if it has none)."""
        import obstore

        result = self._call(obstore.get, key)
        data = bytes(self._call(lambda _client: result.bytes()))
        return data, _mtime(result.attributes)

    def download(self, key: str, descriptor: Descriptor) -> float | None:
        """Stream the object into an open local file; returns its recorded mtime."""
        import obstore

        result = self._call(obstore.get, key)

        def copy(_client: Any) -> None:
            for chunk in result.stream(min_chunk_size=8 << 20):
                descriptor.write(chunk)

        self._call(copy)
        return _mtime(result.attributes)

    def open(self, key: str) -> BytesReader:
        return BytesReader(self.get(key))

    def _put(self, key: str, body: Any, *, create: bool, mtime: float | None = None) -> bool:
        import obstore

        attributes = {MTIME: repr(mtime)} if mtime is not None else None
        try:
            self._call(obstore.put, key, body, mode="create" if create else "overwrite", attributes=attributes)
        except RemoteError as exc:
            if create and ("already exists" in str(exc).lower() or "precondition" in str(exc).lower()):
                return False
            raise
        return True

    def put_atomic(self, key: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        data = b"".join(bytes(chunk) for chunk in chunks)
        if verify is not None and not verify():
            return False
        return self._put(key, data, create=False)

    def put_if_absent(self, key: str, chunks: Iterable[Any]) -> bool:
        return self._put(key, b"".join(bytes(chunk) for chunk in chunks), create=True)

    def upload(self, key: str, path: str, *, create: bool = False, mtime: float | None = None) -> bool:
        """Upload a local file (streamed), with the mtime it has there; with `create`, only if
        absent (False when it was there already)."""
        import pathlib

        return self._put(key, pathlib.Path(path), create=create, mtime=mtime)

    def upload_bytes(self, key: str, data: bytes, *, mtime: float | None = None) -> None:
        """Upload bytes, replacing what is there, with the mtime of the file they were read from."""
        self._put(key, data, create=False, mtime=mtime)

    def stat(self, key: str) -> Entry | None:
        import obstore

        try:
            meta = self._call(obstore.head, key)
        except FileNotFoundError:
            return None
        return Entry(key, meta["size"], _timestamp(meta["last_modified"]), tag=meta["e_tag"] or "")

    def list(self, prefix: str, *, deep: bool = True) -> list[Entry]:
        """Every object whose key starts with `prefix/` (a bucket has no folders: deep or not)."""
        import obstore

        def pages(client: Any) -> list[list[dict[str, Any]]]:
            return list(obstore.list(client, prefix or None, chunk_size=1000))

        return [Entry(meta["path"], meta["size"], _timestamp(meta["last_modified"]), tag=meta["e_tag"] or "")
                for page in self._call(pages) for meta in page]

    def delete(self, key: str) -> None:
        import obstore

        try:
            self._call(obstore.delete, key)
        except FileNotFoundError:
            pass

    def delete_all(self, prefix: str) -> None:
        for entry in self.list(prefix):
            self.delete(entry.key)

    def touch(self, key: str) -> None:
        """Objects keep their upload time."""

    def lock(self, key: str, *, exclusive: bool, blocking: bool = True) -> None:
        return None

    def held(self, key: str) -> bool:
        return False

