"""Data files shipped with the package (the seed-004 dataset)."""
