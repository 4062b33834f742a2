"""The generated protobuf and gRPC modules of the public API (scripts/gen-python-client)."""
