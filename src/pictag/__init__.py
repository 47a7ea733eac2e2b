"""pictag: image classification for every task kind -- multi-class, multi-label, multi-output."""

__version__ = "0.1.0"
