"""Prefect flows that orchestrate the DVC pipeline (DVC owns the stage graph and caching)."""
