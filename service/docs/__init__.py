"""The API's face: ``/docs.json`` (BentoML's OpenAPI document, corrected and presented) and
the docs page at ``/``. Reads the error table, the paths and the V2 operation table; imports
no handler and nothing of ``service.inference``."""
