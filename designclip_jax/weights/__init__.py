"""Model weights on disk, every source in one place: HF safetensors (``hf_format``), OpenAI-format state
dicts (``openai_format``), a training run's Orbax checkpoints (``run_checkpoints``) and its ``model.json``
(``model_spec``), and ``loader.load_model`` over all of them."""
