"""The quality layer's errors, below both the metrics and the networks they load (metrics.py
imports stlpips.py; both raise these)."""


class MetricUnavailable(RuntimeError):
    """A metric that cannot run in this environment (missing package or weights)."""
