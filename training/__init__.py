"""Training pipeline for the crop-yield model; run it with ``python -m training``."""
