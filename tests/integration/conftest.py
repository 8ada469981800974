"""Real servers on loopback (SeaweedFS, Pushgateway), started and stopped by these fixtures for the tests here."""

from tests.support.servers import own_seaweed, pushgateway, s3_bucket, seaweed  # noqa: F401
