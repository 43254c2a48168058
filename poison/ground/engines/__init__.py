"""The ground's engines: models and what runs them. Model specs to local folders (device and dtype choice, layer
subsets, merged adapters), generation and scoring backends (the vLLM worker, HF generate, OpenAI-compatible
endpoints), the local vLLM server for judge models, and ``RunContext``, what a run hands to its stages and plugins.
It stands on the core only; it knows nothing of run directories or statistics (``poison.ground.results``)."""
