"""Data: sources, label schema, checks, splits, datasets and transforms."""
