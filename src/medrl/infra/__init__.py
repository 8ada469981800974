"""Infrastructure: the artifact store, run layout, metrics, launchers."""
