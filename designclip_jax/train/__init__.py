"""Training: the jitted, sharded step (``step``), and the loop (``loop``).

    python -m designclip_jax.train --config configs/synthetic_tiny.py --workdir runs/tiny
"""
