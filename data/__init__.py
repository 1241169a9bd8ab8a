"""Datasets: the handle every page, explainer and worker sees, built-in sets and user loaders."""
