"""Explainers: the contract (base), the registry, the methods (one module each) and the metrics."""
