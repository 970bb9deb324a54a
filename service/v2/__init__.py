"""The Open Inference Protocol ("KServe V2") for the crop-yield model.

- ``schemas``: the protocol's JSON objects as pydantic models (they document ``/docs.json``).
- ``codec``: pure functions between request bodies (JSON or binary tensors) and the
  model's row matrices, and back to response bodies; no server needed to test them.
- ``routes``: the HTTP routes, mounted into the BentoML service.
"""
