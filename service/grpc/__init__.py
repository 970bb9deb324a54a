"""The Open Inference Protocol over gRPC, with standard health checking and reflection."""
