"""Models: the handle explainers see, the built-in zoo, and loaders for user models."""
