"""An S3-compatible bucket (through obstore): the few object calls the sync needs, each failure one clear line.

Endpoint and credentials come from the usual AWS settings: `AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`/`AWS_REGION`,
and, when the keys are not in the environment, the static keys, region and `endpoint_url` of
the profile `AWS_PROFILE` (else `default`) in `~/.aws/credentials` and `~/.aws/config`.
obstore is imported on first use only (never at start-up).
"""

from __future__ import annotations

import os

from chkpt import paths
from chkpt.store import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

MTIME = "chkpt-mtime"  # user metadata: the file's mtime in the store it was uploaded from


class RemoteError(StoreError):
    """The bucket cannot be reached or used; the message says why in one line."""


class Missing(RemoteError):
    """The object is not in the bucket."""


def split_url(url: str) -> tuple[str, str]:
    """("bucket", "prefix") of "s3://bucket/prefix"; RemoteError for a URL without a bucket."""
    bucket, _, prefix = url[len(paths.REMOTE_SCHEME):].partition("/")
    if not bucket:
        raise RemoteError(f"{url} names no bucket (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


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


def _problem(exc: BaseException, url: str) -> RemoteError:
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
        ("credential", "no usable credentials (set AWS_ACCESS_KEY_ID or AWS_PROFILE)"),
    ]:
        if code.lower() in text.lower():
            return RemoteError(f"{url}: {meaning}")
    return RemoteError(f"{url}: {first[:200]}")


def _timestamp(when: Any) -> float:
    return when.timestamp()  # a datetime


class Object:
    """One listed object: its key (relative to the store's prefix), size, ETag and upload time."""

    __slots__ = ("etag", "key", "modified", "size")

    def __init__(self, key: str, size: int, etag: str, modified: float) -> None:
        self.key = key
        self.size = size
        self.etag = etag
        self.modified = modified


class Remote:
    """The bucket and prefix of one `s3://bucket/prefix` store."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = split_url(self.url)
        self._store: Any = None

    def _client(self) -> Any:
        if self._store is not None:
            return self._store
        import datetime

        try:
            from obstore.store import S3Store
        except ImportError:
            raise RemoteError(f"{self.url} needs the S3 extra: pip install 'chkpt[s3]'") from None
        env = os.environ
        settings: dict[str, Any] = {}
        if not env.get("AWS_ACCESS_KEY_ID"):
            profile = _profile_settings(env)
            for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
                if key in profile:
                    settings[key] = profile[key]
            if "region" in profile and not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
                settings["aws_region"] = profile["region"]
            if "endpoint_url" in profile and not env.get("AWS_ENDPOINT_URL"):
                settings["aws_endpoint"] = profile["endpoint_url"]
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            settings["aws_region"] = region
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or settings.get("aws_endpoint")
        if endpoint:
            settings["aws_endpoint"] = endpoint
        settings.setdefault("aws_region", "us-east-1")
        client_options = {"connect_timeout": "5s", "timeout": "120s",
                          "allow_http": bool(endpoint and endpoint.startswith("http://"))}
        retry = {"max_retries": 2, "retry_timeout": datetime.timedelta(seconds=20)}
        try:
            self._store = S3Store(self.bucket, prefix=self.prefix or None, config=settings,
                                  client_options=client_options, retry_config=retry)
        except Exception as exc:
            raise _problem(exc, self.url) from None
        return self._store

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        client = self._client()
        try:
            return function(client, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, FileNotFoundError) and "NoSuchBucket" not in str(exc):
                raise Missing(f"{self.url}/{args[0] if args else ''} is missing") from None
            raise _problem(exc, self.url) from None

    def put(self, key: str, data: Any, *, create: bool = False, mtime: float | None = None) -> bool:
        """Upload bytes or a file (a path, streamed); with `create`, only if absent.

        Returns False when `create` found the object already there.
        """
        import pathlib

        import obstore

        body = pathlib.Path(data) if isinstance(data, str) else data
        attributes = {MTIME: repr(mtime)} if mtime is not None else None
        try:
            self._call(obstore.put, key, body, mode="create" if create else "overwrite", attributes=attributes)
        except RemoteError as exc:
            if create and ("already exists" in str(exc).lower() or "precondition" in str(exc).lower()):
                return False
            raise
        return True

    def get(self, key: str) -> tuple[bytes, float | None]:
        """The object's bytes and the mtime it was uploaded with (None if it has none)."""
        import obstore

        result = self._call(obstore.get, key)
        data = bytes(self._call(lambda _client: result.bytes()))
        return data, _mtime(result.attributes)

    def get_to(self, key: str, fd: int) -> float | None:
        """Stream the object into the open file `fd`; returns its recorded mtime."""
        import obstore

        result = self._call(obstore.get, key)

        def copy(_client: Any) -> None:
            for chunk in result.stream(min_chunk_size=8 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]

        self._call(copy)
        return _mtime(result.attributes)

    def head(self, key: str) -> Object | None:
        import obstore

        try:
            meta = self._call(obstore.head, key)
        except Missing:
            return None
        return Object(key, meta["size"], meta["e_tag"] or "", _timestamp(meta["last_modified"]))

    def list(self, prefix: str) -> Iterator[Object]:
        """Every object whose key starts with `prefix` (relative to the store's prefix)."""
        import obstore

        def pages(client: Any) -> list[list[dict[str, Any]]]:
            return list(obstore.list(client, prefix or None, chunk_size=1000))

        for page in self._call(pages):
            for meta in page:
                yield Object(meta["path"], meta["size"], meta["e_tag"] or "", _timestamp(meta["last_modified"]))

    def delete(self, key: str) -> None:
        import obstore

        try:
            self._call(obstore.delete, key)
        except Missing:
            pass


def _mtime(attributes: dict[str, Any]) -> float | None:
    try:
        return float(attributes[MTIME])
    except (KeyError, TypeError, ValueError):
        return None
