"""SeaweedFS on loopback for the store benchmark."""

from tests.integration.servers import s3_bucket, seaweed  # noqa: F401
