"""S3 settings come from the AWS CLI's variables; failures are classed as worth retrying or not, and
described without object names (keys can carry file names of patients' data). No server needed."""

import pytest
import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError

from medrl import store
from medrl.store.s3 import S3Settings, describe, split, transient

KEYS = {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk"}


class Response:
    def __init__(self, status):
        self.status = status


def s3_error(code: str, status: int) -> S3Error:
    return S3Error(Response(status), code, "msg", "/bucket/images/patient-7.png", "rid", "hid", "bucket", "images/p")


@pytest.mark.parametrize(
    ("env", "endpoint", "secure", "region"),
    [
        ({}, "s3.amazonaws.com", True, None),
        ({"AWS_ENDPOINT_URL": "http://minio.store:9000"}, "minio.store:9000", False, None),
        (
            {"AWS_ENDPOINT_URL": "http://ignored:1", "AWS_ENDPOINT_URL_S3": "https://seaweedfs:8333/"},
            "seaweedfs:8333",
            True,
            None,
        ),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, "s3.amazonaws.com", True, "eu-west-1"),
        ({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "us-east-2"}, "s3.amazonaws.com", True, "us-east-2"),
    ],
)
def test_settings_from_env(env, endpoint, secure, region):
    s = S3Settings.from_env({**KEYS, **env})
    assert (s.endpoint, s.secure, s.region) == (endpoint, secure, region)
    assert s.verify_tls and s.access_key == "ak" and s.secret_key == "sk"


def test_tls_verification_ca_bundle_and_tuning():
    env = {**KEYS, "MEDRL_S3_TLS_VERIFY": "0", "AWS_CA_BUNDLE": "/etc/ca.pem", "MEDRL_STORE_RETRY_SECONDS": "7.5"}
    s = S3Settings.from_env({**env, "MEDRL_STORE_WORKERS": "8", "MEDRL_S3_PART_SIZE": str(16 << 20)})
    assert (s.verify_tls, s.ca_bundle, s.retry_seconds) == (False, "/etc/ca.pem", 7.5)
    assert (s.workers, s.part_size) == (8, 16 << 20)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ({**KEYS, "AWS_ENDPOINT_URL_S3": "minio:9000"}, "http://host:port"),
        ({**KEYS, "AWS_ENDPOINT_URL_S3": "http://minio:9000/bucket"}, "http://host:port"),
        ({**KEYS, "MEDRL_S3_PART_SIZE": "1000"}, "at least 5 MiB"),
        ({**KEYS, "MEDRL_STORE_RETRY_SECONDS": "soon"}, "MEDRL_STORE_RETRY_SECONDS"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(store.StoreError, match=message):
        S3Settings.from_env(env)


def test_uris_split_into_bucket_and_key():
    assert split("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split("s3://bucket") == ("bucket", "")
    with pytest.raises(store.StoreError, match="s3://bucket/prefix"):
        split("s3:///nobucket")


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (s3_error("InternalError", 500), True),
        (s3_error("SlowDown", 503), True),
        (s3_error("AccessDenied", 403), False),
        (s3_error("NoSuchKey", 404), False),
        (ServerError("server failed with HTTP status code 502", 502), True),
        (InvalidResponseError(503, "text/html", "<html>busy</html>"), True),
        (InvalidResponseError(400, "text/html", "bad"), False),
        (urllib3.exceptions.ProtocolError("Connection aborted."), True),
        (urllib3.exceptions.NewConnectionError(None, "refused"), True),
        (ConnectionResetError(), True),
        (ValueError("invalid bucket name b"), False),
        (store.IntegrityError("damaged"), False),
    ],
)
def test_transient_failures_are_retried_and_others_not(exc, retry):
    assert transient(exc) is retry


def test_descriptions_never_name_the_object():
    text = describe(s3_error("InternalError", 500))
    assert text == "S3 error InternalError (HTTP 500)" and "patient" not in text
    pool_error = urllib3.exceptions.MaxRetryError(None, "/bucket/images/patient-7.png", ConnectionRefusedError())
    assert describe(pool_error) == "ConnectionRefusedError"
