"""A real Pushgateway on loopback for the push tests."""

from tests.support.servers import pushgateway  # noqa: F401
