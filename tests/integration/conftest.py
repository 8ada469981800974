"""Real servers on loopback (SeaweedFS, Pushgateway, MLflow), started and stopped by these fixtures for the tests
here."""

from tests.support.servers import (  # noqa: F401
    mlflow_server,
    own_mlflow_server,
    own_seaweed,
    pushgateway,
    s3_bucket,
    seaweed,
)
