"""Loupe's persistent state: where it lives on disk (and, from issue #3 on, the DuckDB cache)."""
