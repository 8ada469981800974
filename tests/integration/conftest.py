"""Real servers on loopback (SeaweedFS, Pushgateway, MLflow), started and stopped by these fixtures for the tests
here; the reduced demo study, run once for the tests that read it."""

from tests.support.reduced_demo import reduced_demo  # noqa: F401
from tests.support.servers import (  # noqa: F401
    mlflow_server,
    own_mlflow_server,
    own_seaweed,
    pushgateway,
    s3_bucket,
    seaweed,
)
