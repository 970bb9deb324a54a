"""The project's own JSON API: ``POST /predict`` (rows), ``POST /predict_columns`` (bulk
columns), ``GET /metadata``.

- ``schemas``: the request and response models (they document ``/docs.json``);
- ``encoding``: pure functions between the schemas and the data plane's matrices;
- ``handlers``: decode → data plane → encode, and its refusals answered from the error table;
- ``metadata``: what ``GET /metadata`` says, and the mounted app that serves it.
"""
