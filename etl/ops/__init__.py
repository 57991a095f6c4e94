"""Operating a worker: status views, pause state, metrics, message query and search."""
