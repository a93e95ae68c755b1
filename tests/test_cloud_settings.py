"""Bucket URLs and each cloud's settings, credentials and error lines, in-process: what chkpt makes
of the URL a user pastes and of the environment their cloud's tools set (the servers are in
test_shared_store.py)."""

from __future__ import annotations

import json

import pytest

from chkpt import config as config_module
from chkpt import paths
from chkpt.store import RemoteError
from chkpt.store.objects import _CLOUDS, _problem, describe, split_url


@pytest.mark.parametrize(("written", "url"), [
    ("s3://team/chkpt/", "s3://team/chkpt"),
    ("gs://team/chkpt", "gs://team/chkpt"),
    ("gcs://team/chkpt", "gs://team/chkpt"),
    ("az://team/chkpt", "az://team/chkpt"),
    ("azure://team/chkpt", "az://team/chkpt"),
    ("adl://team/chkpt", "az://team/chkpt"),
    ("abfs://team/chkpt", "az://team/chkpt"),
    ("abfss://team@acct.dfs.core.windows.net/chkpt//", "az://team@acct.dfs.core.windows.net/chkpt"),
])
def test_every_spelling_of_a_bucket_url_names_one_store(written, url):
    assert paths.is_remote(written)
    assert paths.remote_url(written) == url
    loaded = config_module.load("/", environ={"CHKPT_DIR": written})
    assert loaded.remote == url
    assert loaded.store_dir == f"{paths.remote_home(url)}/staging"


@pytest.mark.parametrize("directory", ["/data/s3://x", "s3:/team", "gs:team", "./az://x", "https://acct.blob.core.windows.net/c",
                                       "S3://team"])
def test_other_dirs_are_directories(directory):
    assert not paths.is_remote(directory)


@pytest.mark.parametrize(("url", "cloud", "bucket", "prefix"), [
    ("s3://team/a/b", "Amazon S3", "team", "a/b"),
    ("gcs://team", "Google Cloud Storage", "team", ""),
    ("az://team/chkpt", "Azure Blob Storage", "team", "chkpt"),
    ("abfss://team@acct.dfs.core.windows.net/chkpt", "Azure Blob Storage", "team@acct.dfs.core.windows.net", "chkpt"),
    ("az://team@acct/chkpt", "Azure Blob Storage", "team@acct", "chkpt"),
])
def test_a_url_is_a_cloud_a_bucket_and_a_prefix(url, cloud, bucket, prefix):
    found, name, within = split_url(url)
    assert (found.name, name, within) == (cloud, bucket, prefix)


@pytest.mark.parametrize(("url", "message"), [
    ("gs://", "gs:// names no bucket (expected gs://bucket/prefix)"),
    ("gs://team@acct/x", "gs://team@acct/x names no bucket (expected gs://bucket/prefix)"),
    ("az:///x", "az:///x names no container (expected az://container/prefix or az://container@account/prefix)"),
    ("abfss://c@Bad!/p", "az://c@Bad!/p names no container (expected az://container/prefix or "
                         "az://container@account/prefix)"),
    ("/data/x", "/data/x is not a bucket URL (s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)"),
])
def test_a_url_without_a_bucket_is_one_line(url, message):
    with pytest.raises(RemoteError) as raised:
        split_url(url)
    assert str(raised.value) == message


def gcs(environ):
    return _CLOUDS["gs://"].settings("team", environ)


def azure(environ, bucket="team"):
    return _CLOUDS["az://"].settings(bucket, environ)


def test_gcs_takes_googles_emulator_switch_with_or_without_a_scheme():
    for host in ("127.0.0.1:4443", "http://127.0.0.1:4443/"):
        settings, source = gcs({"STORAGE_EMULATOR_HOST": host, "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"})
        assert settings == {"base_url": "http://127.0.0.1:4443", "bearer_token": "emulator"}
        assert source == "none, for an emulator (STORAGE_EMULATOR_HOST)"


def test_gcs_credentials_in_googles_order(tmp_path):
    home = tmp_path / "home"
    assert gcs({"HOME": str(home)})[1] == ("the machine's service account (metadata server): no "
                                           "GOOGLE_APPLICATION_CREDENTIALS or gcloud login")
    adc = home / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True)
    adc.write_text(json.dumps({"type": "authorized_user"}))
    assert gcs({"HOME": str(home)}) == ({"application_credentials": str(adc)},
                                        f"gcloud's application default credentials ({adc})")
    moved = tmp_path / "gcloud" / "application_default_credentials.json"  # gcloud's CLOUDSDK_CONFIG
    moved.parent.mkdir()
    moved.write_text("{}")
    assert gcs({"HOME": str(home), "CLOUDSDK_CONFIG": str(moved.parent)})[0] == {"application_credentials": str(moved)}
    assert gcs({"HOME": str(home), "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"}) == (
        {}, "GOOGLE_APPLICATION_CREDENTIALS (/k.json)")
    assert gcs({"GOOGLE_SERVICE_ACCOUNT_KEY": '{"secret": 1}'}) == ({}, "GOOGLE_SERVICE_ACCOUNT_KEY")  # not shown


KEY = "a2V5"


def test_azure_connection_strings():
    settings, source = azure({"AZURE_STORAGE_CONNECTION_STRING":
                              f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};"
                              "EndpointSuffix=core.chinacloudapi.cn"})
    assert settings == {"account_name": "acct", "account_key": KEY,
                        "endpoint": "https://acct.blob.core.chinacloudapi.cn"}
    assert source == "AZURE_STORAGE_CONNECTION_STRING, account acct"
    settings, _ = azure({"AZURE_STORAGE_CONNECTION_STRING":
                         f"AccountName=devstoreaccount1;AccountKey={KEY};"
                         "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"})
    assert settings["endpoint"] == "http://127.0.0.1:10000/devstoreaccount1"
    settings, _ = azure({"AZURE_STORAGE_CONNECTION_STRING": "BlobEndpoint=https://acct.blob.core.windows.net/;"
                                                            "SharedAccessSignature=sv=2022&sig=abc"})
    assert settings == {"endpoint": "https://acct.blob.core.windows.net/", "sas_key": "sv=2022&sig=abc"}
    assert azure({"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}) == (
        {"use_emulator": True},
        "the emulator's well-known account (AZURE_STORAGE_CONNECTION_STRING UseDevelopmentStorage)")


def test_azure_cli_variables_and_the_account_in_the_url():
    settings, source = azure({"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": KEY})
    assert settings == {"account_name": "acct", "account_key": KEY}
    assert source == "AZURE_STORAGE_KEY, account acct"
    assert azure({"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_SAS_TOKEN": "sv=1",
                  "AZURE_STORAGE_ENDPOINT": "http://azurite:10000/acct"}) == (
        {"endpoint": "http://azurite:10000/acct"}, "AZURE_STORAGE_SAS_TOKEN, account acct")
    settings, source = azure({"AZURE_STORAGE_ACCOUNT_NAME": "other"}, bucket="team@acct.dfs.core.windows.net")
    assert settings == {"account_name": "acct"}
    assert source == "the machine's managed identity: no AZURE_STORAGE_ACCOUNT_KEY, SAS token or connection string, " \
                     "account acct"


def test_doctor_names_the_cloud_its_endpoint_and_the_credentials_source():
    environ = {"AWS_ACCESS_KEY_ID": "x", "AWS_ENDPOINT_URL": "http://minio:9000"}
    assert describe("s3://team/x", environ) == "Amazon S3 at http://minio:9000, credentials: AWS_ACCESS_KEY_ID"
    assert describe("gcs://team", {"STORAGE_EMULATOR_HOST": "localhost:4443"}) == (
        "Google Cloud Storage at http://localhost:4443, credentials: none, for an emulator (STORAGE_EMULATOR_HOST)")
    assert describe("az://team", {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": KEY}) == (
        "Azure Blob Storage, credentials: AZURE_STORAGE_ACCOUNT_KEY, account acct")


# obstore's own words for failures that need no server (measured with obstore 0.12.1); those that need
# one are checked against the servers in test_shared_store.py
@pytest.mark.parametrize(("scheme", "text", "line"), [
    ("gs://", "Generic GCS error: Unable to open service account file from /k.json: No such file or directory "
              "(os error 2)\n\nDebug source: ...",
     "cannot read the credentials file /k.json (No such file or directory; check GOOGLE_APPLICATION_CREDENTIALS)"),
    ("gs://", "Generic GCS error: Unable to decode service account file: key must be a string at line 1 column 2",
     "the credentials file is not a valid key (check GOOGLE_APPLICATION_CREDENTIALS)"),
    ("gs://", "Generic GCS error: Error performing token request: Error performing GET http://169.254.169.254/"
              "computeMetadata/v1/instance/service-accounts/default/token - HTTP error: error sending request",
     "no usable credentials (set GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`)"),
    ("az://", "Generic MicrosoftAzure error: Account must be specified\n\nDebug source: MissingAccount",
     "no storage account named (az://container@account/prefix, AZURE_STORAGE_ACCOUNT_NAME or "
     "AZURE_STORAGE_CONNECTION_STRING)"),
    ("az://", "Generic MicrosoftAzure error: Invalid Access Key: Invalid symbol 33, offset 9.",
     "the account key is not a key (check AZURE_STORAGE_ACCOUNT_KEY / the connection string)"),
    ("az://", "Generic MicrosoftAzure error: Error performing token request: Error performing GET "
              "http://169.254.169.254/metadata/identity/oauth2/token - HTTP error: error sending request",
     "no usable credentials (set AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or "
     "AZURE_STORAGE_CONNECTION_STRING)"),
    ("az://", "Generic MicrosoftAzure error: Error performing PUT http://x/c/k - Server returned non-2xx status "
              "code: 400 Bad Request: <?xml version=\"1.0\"?>\n<Error>\n  <Code>InvalidMetadata</Code>\n  "
              "<Message>The metadata specified is invalid.\nRequestId:1</Message></Error>",
     "the server refused the request (InvalidMetadata: The metadata specified is invalid.)"),
])
def test_each_failure_is_one_line_in_its_clouds_words(scheme, text, line):
    assert str(_problem(Exception(text), f"{scheme}team", _CLOUDS[scheme])) == f"{scheme}team: {line}"
