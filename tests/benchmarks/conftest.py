"""SeaweedFS on loopback for the store benchmark."""

from tests.support.servers import s3_bucket, seaweed  # noqa: F401
