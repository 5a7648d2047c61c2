"""Data: the IMPACT and synthetic sources, ingestion into an ArrayRecord data set, the Grain training pipeline."""
