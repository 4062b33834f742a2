"""The generated protobuf module of the sidecar protocol (scripts/gen-python-client)."""
