"""HTTP plumbing shared by the HTTP front ends (``service.rest``, ``service.v2``): the error
table and its one response builder, the paths' roles, and the guards every request passes
(request id and deadline, authentication, body and concurrency limits, media type).
Knows nothing of the model: never imports ``service.inference``."""
