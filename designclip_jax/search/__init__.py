"""Prior-art search: index a data set's drawings and captions with any loadable model, query by
drawings and/or words, and serve a local search page (``python -m designclip_jax.search``)."""
