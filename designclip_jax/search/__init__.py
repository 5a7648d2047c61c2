"""Prior-art search: index the drawings (and captions) of ingested data sets, plain folders of drawings or
DeepPatent trees with any loadable model, with each patent's dates, Locarno code and family where its source
gives them; query by drawings, words or a patent of the index, filtered by effective filing date, Locarno and
USPC class, many queries at once, each search written as a record fit to be filed; and serve a search page that
may be exposed (``python -m designclip_jax.search``)."""
