"""streamstt gRPC server and streaming engine."""
