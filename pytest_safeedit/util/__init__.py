"""Internal helpers: atomic files and builds, text, the on-disk cache."""
