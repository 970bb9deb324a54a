"""The model side of the service, protocol-neutral: numpy rows in, numpy rows out, no HTTP.

- ``model``: loads a store entry (the reader's half of ``contract``) onto a device;
- ``device``: the one place that decides where tensors live;
- ``batching``: merges rows of concurrent calls into one model call;
- ``intervals``, ``training_range``: prediction intervals and extrapolation flags;
- ``dataplane``: what every front end (REST, V2, gRPC) calls: predict, bounds, flags, counts;
- ``errors``: what the data plane refuses (each front end answers them in its protocol);
- ``preflight``: the checks made once before any worker starts.
"""
