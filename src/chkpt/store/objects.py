"""A store in a bucket (through obstore): the backend protocol over object calls, each failure
one clear line.

A URL scheme is a cloud (`_CLOUDS`): its client, settings and credentials by that cloud's
conventions, its error codes, and the name of the mtime metadata. `s3://bucket/prefix` takes
AWS's settings (`AWS_ENDPOINT_URL`, keys, region, the profile in `~/.aws`), `gs://bucket/prefix`
Google's (a service account or application default credentials; `STORAGE_EMULATOR_HOST` for an
emulator), `az://container/prefix` Azure's (`AZURE_STORAGE_ACCOUNT_NAME` and a key, a SAS token
or an identity, `AZURE_STORAGE_CONNECTION_STRING`, `AZURE_STORAGE_USE_EMULATOR` for Azurite).
The README's shared-store section lists every variable. A bucket has no folders and no locks:
objects are whole once written, and a run's liveness is a lease (cache.py). obstore is
imported on first use only (never at start-up).
"""

from __future__ import annotations

import os
import re

from chkpt import paths
from chkpt.store.backend import Entry
from chkpt.store.errors import RemoteError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    from chkpt.store.files import Descriptor

# user metadata: the file's mtime in the store it was uploaded from (Azure's metadata names are
# C# identifiers: no "-" there)
MTIME = "chkpt-mtime"
AZURE_MTIME = "chkpt_mtime"


def _client_options(endpoint: str | None) -> dict[str, Any]:
    return {"connect_timeout": "5s", "timeout": "120s", "allow_http": bool(endpoint and endpoint.startswith("http://"))}


def _retry() -> dict[str, Any]:
    import datetime

    return {"max_retries": 2, "retry_timeout": datetime.timedelta(seconds=20)}


# -- S3 ---------------------------------------------------------------------------------------------

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


def _s3_settings(bucket: str, environ: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """An S3 bucket's settings by AWS's conventions, and where its credentials come from."""
    settings: dict[str, Any] = {}
    if environ.get("AWS_ACCESS_KEY_ID"):
        source = "AWS_ACCESS_KEY_ID"
    else:
        profile = _profile_settings(environ)
        for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
            if key in profile:
                settings[key] = profile[key]
        if "region" in profile and not (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")):
            settings["aws_region"] = profile["region"]
        if "endpoint_url" in profile and not environ.get("AWS_ENDPOINT_URL"):
            settings["aws_endpoint"] = profile["endpoint_url"]
        name = environ.get("AWS_PROFILE", "default")
        source = (f"profile {name} of {environ.get('AWS_SHARED_CREDENTIALS_FILE', '~/.aws/credentials')}"
                  if "aws_access_key_id" in profile else
                  "the machine's role (instance or container metadata): no AWS_ACCESS_KEY_ID or profile keys")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        settings["aws_region"] = region
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or settings.get("aws_endpoint")
    if endpoint:
        settings["aws_endpoint"] = endpoint
    settings.setdefault("aws_region", "us-east-1")
    return settings, source


def _s3_client(bucket: str, prefix: str, settings: dict[str, Any]) -> Any:
    from obstore.store import S3Store

    return S3Store(bucket, prefix=prefix or None, config=settings,
                   client_options=_client_options(settings.get("aws_endpoint")), retry_config=_retry())


# -- Google Cloud Storage -------------------------------------------------------------------------------

def _gcs_settings(bucket: str, environ: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """A GCS bucket's settings by Google's conventions, and where its credentials come from.

    obstore reads GOOGLE_SERVICE_ACCOUNT(_PATH, _KEY), GOOGLE_APPLICATION_CREDENTIALS and
    gcloud's ~/.config/gcloud/application_default_credentials.json itself, then asks the
    metadata server; chkpt adds STORAGE_EMULATOR_HOST (Google's client libraries' switch to an
    emulator: its URL, no OAuth) and gcloud's CLOUDSDK_CONFIG folder."""
    settings: dict[str, Any] = {}
    emulator = environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if emulator:
        base = (emulator if "://" in emulator else f"http://{emulator}").rstrip("/")
        settings.update(base_url=base, bearer_token="emulator")  # an emulator takes any token: no OAuth
        return settings, "none, for an emulator (STORAGE_EMULATOR_HOST)"
    if environ.get("GOOGLE_BASE_URL"):
        settings["base_url"] = environ["GOOGLE_BASE_URL"]
    for variable in ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY",
                     "GOOGLE_BEARER_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
        if environ.get(variable):
            secret = variable in ("GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_BEARER_TOKEN")  # not shown
            return settings, variable if secret else f"{variable} ({environ[variable]})"
    gcloud = environ.get("CLOUDSDK_CONFIG") or os.path.join(environ.get("HOME") or "~", ".config", "gcloud")
    adc = os.path.join(os.path.expanduser(gcloud), "application_default_credentials.json")
    if os.path.isfile(adc):
        settings["application_credentials"] = adc
        return settings, f"gcloud's application default credentials ({adc})"
    return settings, ("the machine's service account (metadata server): no GOOGLE_APPLICATION_CREDENTIALS "
                      "or gcloud login")


def _gcs_client(bucket: str, prefix: str, settings: dict[str, Any]) -> Any:
    from obstore.store import GCSStore

    return GCSStore(bucket, prefix=prefix or None, config=settings,
                    client_options=_client_options(settings.get("base_url")), retry_config=_retry())


# -- Azure Blob Storage ----------------------------------------------------------------------------------

def _connection_string(text: str) -> dict[str, str]:
    """The fields of an Azure storage connection string ("Key=value;Key=value")."""
    fields = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            fields[key.strip().lower()] = value.strip()
    return fields


def _azure_settings(bucket: str, environ: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """An Azure container's settings by Azure's conventions, and where its credentials come from.

    obstore reads AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN,
    AZURE_CLIENT_ID/_SECRET/AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_USE_AZURE_CLI and
    AZURE_STORAGE_USE_EMULATOR (with AZURITE_BLOB_STORAGE_URL) itself, then asks the managed
    identity endpoint; chkpt adds the account named in the URL (`az://container@account/…`),
    AZURE_STORAGE_CONNECTION_STRING and the Azure CLI's AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY."""
    settings: dict[str, Any] = {}
    account = bucket.partition("@")[2].partition(".")[0]
    connection = _connection_string(environ.get("AZURE_STORAGE_CONNECTION_STRING", ""))
    if connection:
        if connection.get("usedevelopmentstorage", "").lower() == "true":
            settings["use_emulator"] = True
            proxy = connection.get("developmentstorageproxyuri")
            return settings, ("the emulator's well-known account (AZURE_STORAGE_CONNECTION_STRING "
                              f"UseDevelopmentStorage{', ' + proxy if proxy else ''})")
        for field, key in (("accountname", "account_name"), ("accountkey", "account_key"),
                           ("sharedaccesssignature", "sas_key"), ("blobendpoint", "endpoint")):
            if connection.get(field):
                settings[key] = connection[field]
        if "endpoint" not in settings and "account_name" in settings and "endpointsuffix" in connection:
            protocol = connection.get("defaultendpointsprotocol", "https")
            settings["endpoint"] = f"{protocol}://{settings['account_name']}.blob.{connection['endpointsuffix']}"
        source = "AZURE_STORAGE_CONNECTION_STRING"
    else:
        if environ.get("AZURE_STORAGE_ACCOUNT") and not environ.get("AZURE_STORAGE_ACCOUNT_NAME"):
            settings["account_name"] = environ["AZURE_STORAGE_ACCOUNT"]
        key_variable = next((v for v in ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY",
                                         "AZURE_STORAGE_MASTER_KEY", "AZURE_STORAGE_KEY") if environ.get(v)), None)
        if key_variable == "AZURE_STORAGE_KEY":
            settings["account_key"] = environ[key_variable]
        emulator = environ.get("AZURE_STORAGE_USE_EMULATOR", "").strip().lower() in ("1", "true", "yes", "on")
        if emulator and not key_variable:
            source = f"the emulator's well-known account (AZURE_STORAGE_USE_EMULATOR, " \
                     f"{environ.get('AZURITE_BLOB_STORAGE_URL') or 'http://127.0.0.1:10000'})"
        else:
            source = key_variable or next(
                (v for v in ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_TOKEN",
                             "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE") if environ.get(v)),
                "the Azure CLI's login (AZURE_USE_AZURE_CLI)" if environ.get("AZURE_USE_AZURE_CLI") else
                "the machine's managed identity: no AZURE_STORAGE_ACCOUNT_KEY, SAS token or connection string")
    if account:
        settings["account_name"] = account
    endpoint = environ.get("AZURE_STORAGE_ENDPOINT") or environ.get("AZURE_ENDPOINT")
    if endpoint and "endpoint" not in settings and "use_emulator" not in settings:
        settings["endpoint"] = endpoint
    named = settings.get("account_name") or environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    return settings, f"{source}{', account ' + named if named else ''}"


def _azure_client(bucket: str, prefix: str, settings: dict[str, Any]) -> Any:
    from obstore.store import AzureStore

    return AzureStore(bucket.partition("@")[0], prefix=prefix or None, config=settings,
                      client_options=_client_options(settings.get("endpoint")), retry_config=_retry())


# -- the clouds ------------------------------------------------------------------------------------------

class Cloud:
    """One cloud's object storage: its client and settings, its words and its error codes."""

    def __init__(self, name: str, bucket_word: str, extra: str, mtime: str,
                 settings: Callable[[str, Mapping[str, str]], tuple[dict[str, Any], str]],
                 client: Callable[[str, str, dict[str, Any]], Any], credentials: str,
                 meanings: list[tuple[str, str]], missing_bucket: str) -> None:
        self.name = name
        self.bucket_word = bucket_word  # "bucket", or Azure's "container"
        self.extra = extra  # pip install 'chkpt[extra]'
        self.mtime = mtime
        self.settings = settings  # (bucket, environ) → (client settings, where its credentials come from)
        self.client = client  # (bucket, prefix, settings) → obstore store
        self.credentials = credentials  # the hint when no credentials are usable
        self.meanings = meanings  # (regular expression over obstore's error text, the meaning)
        self.missing_bucket = missing_bucket  # the error code of a bucket that does not exist


_CLOUDS: dict[str, Cloud] = {
    "s3://": Cloud("Amazon S3", "bucket", "s3", MTIME, _s3_settings, _s3_client,
                   "set AWS_ACCESS_KEY_ID or AWS_PROFILE", [
                       ("NoSuchBucket", "the bucket does not exist"),
                       ("InvalidAccessKeyId", "the access key is not valid (check AWS_ACCESS_KEY_ID / AWS_PROFILE)"),
                       ("SignatureDoesNotMatch",
                        "the secret key is wrong (check AWS_SECRET_ACCESS_KEY / AWS_PROFILE)"),
                       ("AccessDenied", "access denied by the server"),
                       ("403 Forbidden", "access denied by the server (check the credentials)"),
                   ], "NoSuchBucket"),
    "gs://": Cloud("Google Cloud Storage", "bucket", "gs", MTIME, _gcs_settings, _gcs_client,
                   "set GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`", [
                       ("NoSuchBucket", "the bucket does not exist"),
                       (r"Unable to open service account file from (.*?): (.*?)(?: \(os error \d+\))?$",
                        r"cannot read the credentials file \1 (\2; check GOOGLE_APPLICATION_CREDENTIALS)"),
                       ("Unable to decode service account file|Invalid RSA key|InvalidKey",
                        "the credentials file is not a valid key (check GOOGLE_APPLICATION_CREDENTIALS)"),
                       ("401 Unauthorized|AuthenticationRequired|invalid_grant|invalid_token",
                        "the credentials were refused (check GOOGLE_APPLICATION_CREDENTIALS, or run "
                        "`gcloud auth application-default login`)"),
                       ("AccessDenied|403 Forbidden",
                        "access denied: the credentials' account lacks a role on the bucket "
                        "(Storage Object Admin, or Storage Object User)"),
                   ], "NoSuchBucket"),
    "az://": Cloud("Azure Blob Storage", "container", "az", AZURE_MTIME, _azure_settings, _azure_client,
                   "set AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING", [
                       ("ContainerNotFound", "the container does not exist"),
                       ("Account must be specified",
                        "no storage account named (az://container@account/prefix, AZURE_STORAGE_ACCOUNT_NAME "
                        "or AZURE_STORAGE_CONNECTION_STRING)"),
                       ("Invalid Access Key|Invalid symbol",
                        "the account key is not a key (check AZURE_STORAGE_ACCOUNT_KEY / the connection string)"),
                       ("AuthenticationFailed|AuthorizationFailure|Server failed to authenticate",
                        "the account key or SAS token is wrong (check AZURE_STORAGE_ACCOUNT_KEY, "
                        "AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING)"),
                       ("AuthorizationPermissionMismatch|403 Forbidden",
                        "access denied: the identity lacks a role on the container (Storage Blob Data Contributor)"),
                       ("dns error", "the account's host name is unknown (check the storage account name)"),
                   ], "ContainerNotFound"),
}

# every cloud's: after its own codes
_COMMON_MEANINGS = [
    ("token request", "no usable credentials ({credentials})"),
    ("error sending request|Connection refused", "the endpoint cannot be reached"),
    ("dns error", "the endpoint's host name is unknown"),
    ("timed out", "the endpoint did not answer in time"),
    ("credential", "no usable credentials ({credentials})"),
]


def split_url(url: str) -> tuple[Cloud, str, str]:
    """(cloud, bucket, prefix) of "s3://bucket/prefix" (any spelling paths.REMOTE_SCHEMES knows);
    RemoteError for a URL without a bucket. An Azure container may name its account:
    `az://container@account/prefix` (or `…@account.blob.core.windows.net`, as abfss:// URLs do)."""
    if not paths.is_remote(url):
        raise RemoteError(f"{url} is not a bucket URL (s3://bucket/prefix, gs://bucket/prefix or "
                          "az://container/prefix)")
    url = paths.remote_url(url)
    scheme = url[:url.index("://") + 3]
    cloud = _CLOUDS[scheme]
    bucket, _, prefix = url[len(scheme):].partition("/")
    name, _, account = bucket.partition("@")
    azure_account = r"[a-z0-9]{3,24}(\.(dfs|blob)\.core\.windows\.net)?"
    if not name or ("@" in bucket and not (scheme == "az://" and re.fullmatch(azure_account, account))):
        raise RemoteError(f"{url} names no {cloud.bucket_word} (expected {scheme}{cloud.bucket_word}/prefix"
                          + (f" or {scheme}container@account/prefix)" if scheme == "az://" else ")"))
    return cloud, bucket, prefix.strip("/")


def describe(url: str, environ: Mapping[str, str]) -> str:
    """Which cloud a store URL is on, and where its credentials come from (for `chkpt doctor`)."""
    cloud, bucket, _ = split_url(url)
    settings, credentials = cloud.settings(bucket, environ)
    endpoint = next((settings[key] for key in ("aws_endpoint", "base_url", "endpoint") if key in settings), None)
    return f"{cloud.name}{' at ' + endpoint if endpoint else ''}, credentials: {credentials}"


def _problem(exc: BaseException, url: str, cloud: Cloud) -> RemoteError:
    """The one-line reason for an obstore failure."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    for pattern, meaning in [*cloud.meanings, *_COMMON_MEANINGS]:
        found = re.search(pattern, first, re.IGNORECASE) or re.search(pattern, text, re.IGNORECASE)
        if found:
            return RemoteError(f"{url}: {found.expand(meaning).format(credentials=cloud.credentials)}")
    coded = re.search(r"<Code>(\w+)</Code>\s*<Message>([^<\n]*)", text)  # the XML error of S3, GCS and Azure
    if coded:
        return RemoteError(f"{url}: the server refused the request ({coded[1]}: {coded[2].strip()[:200]})")
    return RemoteError(f"{url}: {first[:200]}")


def _timestamp(when: Any) -> float:
    return float(when.timestamp())  # a datetime


class _Exists(RemoteError):
    """A conditional put found the object there already."""


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
        self.cloud, self.bucket, self.prefix = split_url(url)
        self.url = self.location = paths.remote_url(url)
        self._client: Any = None

    def where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        cloud = self.cloud
        if self._client is None:
            try:
                import obstore  # noqa: F401
            except ImportError:
                raise RemoteError(f"{self.url} needs the {cloud.extra} extra: "
                                  f"pip install 'chkpt[{cloud.extra}]'") from None
            try:
                self._client = cloud.client(self.bucket, self.prefix, cloud.settings(self.bucket, os.environ)[0])
            except Exception as exc:
                raise _problem(exc, self.url, cloud) from None
        try:
            return function(self._client, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, FileNotFoundError) and cloud.missing_bucket not in str(exc):
                raise FileNotFoundError(f"{self.url}/{args[0] if args else ''} is missing") from None
            if type(exc).__name__ in ("AlreadyExistsError", "PreconditionError"):
                raise _Exists(str(exc)) from None
            raise _problem(exc, self.url, cloud) from None

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
        return data, self._mtime(result.attributes)

    def download(self, key: str, descriptor: Descriptor) -> float | None:
        """Stream the object into an open local file; returns its recorded mtime."""
        import obstore

        result = self._call(obstore.get, key)

        def copy(_client: Any) -> None:
            for chunk in result.stream(min_chunk_size=8 << 20):
                descriptor.write(chunk)

        self._call(copy)
        return self._mtime(result.attributes)

    def open(self, key: str) -> BytesReader:
        return BytesReader(self.get(key))

    def _mtime(self, attributes: dict[str, Any]) -> float | None:
        try:
            return float(attributes[self.cloud.mtime])
        except (KeyError, TypeError, ValueError):
            return None

    def _put(self, key: str, body: Any, *, create: bool, mtime: float | None = None) -> bool:
        import obstore

        attributes = {self.cloud.mtime: repr(mtime)} if mtime is not None else None
        try:
            self._call(obstore.put, key, body, mode="create" if create else "overwrite", attributes=attributes)
        except _Exists:
            if create:
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

