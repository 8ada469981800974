"""Build tooling that never runs in production: the lock files of the images (`make lock`, `make lock-gpu`)."""
