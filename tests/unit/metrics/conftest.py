"""A real Pushgateway on loopback for the push tests."""

from tests.integration.servers import pushgateway  # noqa: F401
