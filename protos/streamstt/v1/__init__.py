"""Generated gRPC stubs for the streamstt.v1 wire contract (see asr.proto)."""
