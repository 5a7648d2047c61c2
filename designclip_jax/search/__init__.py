"""Prior-art search: index the drawings (and captions) of ingested data sets, plain folders of drawings or
DeepPatent trees with any loadable model, query by drawings and/or words, and serve a search page that may be
exposed (``python -m designclip_jax.search``)."""
