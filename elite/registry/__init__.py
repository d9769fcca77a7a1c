"""MLflow Model Registry: the ELITE pyfunc model, the register stage with its promotion gates, and
payload helpers for downstream apps (`elite.registry.codec`)."""
