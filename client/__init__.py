"""streamstt clients: Python library, CLI, latency harness."""
