"""Helpers shared by the tests: stand-ins for servers that cannot run here, fixtures' builders, real servers on
loopback (servers.py), and the scripts some tests run in their own process."""
