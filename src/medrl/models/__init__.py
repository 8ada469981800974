"""Models: the tiny builder for tests and the demo, and loading by reference (hub id, directory, store URI)."""
