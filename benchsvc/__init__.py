"""benchsvc: a benchmarking service for the Linux large-folio batch-zap patch versions."""

__version__ = "0.1.0"
