"""Evaluation: metrics (pure functions), embedding, the task runner and ``python -m designclip_jax.eval``."""
