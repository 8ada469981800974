"""Datasets: the record format, sources, validation with quarantine, prompts."""
