"""The project's own JSON API: ``POST /predict`` (rows), ``POST /predict_columns`` (bulk
columns), ``GET /metadata``.

- ``schemas``: the request and response models (they document ``/docs.json``);
- ``encoding``: pure functions between the schemas and the data plane's matrices;
- ``handlers``: one per route, validated request → data plane → response, refusals answered
  from the error table (called by ``asgi`` and by the ``@bentoml.api`` bodies alike);
- ``asgi``: the hot route apps, validating bodies with BentoML's own input models;
- ``metadata``: what ``GET /metadata`` says, and the mounted app that serves it.
"""
