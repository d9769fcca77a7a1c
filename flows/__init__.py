"""Prefect orchestration of the DVC pipeline: flow `elite` (elite_flow.py), deployments (serve.py)."""
