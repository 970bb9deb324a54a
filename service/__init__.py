"""The crop-yield prediction service (BentoML 1.4); serve it with ``python -m service``."""
