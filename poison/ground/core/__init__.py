"""The ground's core: what every other part stands on and what needs no model. The plugin registry (kinds,
decorators, entry points, argument validation), the error root, atomic I/O and stable hashing, artifact manifests,
bounded YAML, process groups, the machine's description and final-answer parsing. It imports nothing else of the
project: the engines and the results layer stand on it (the import-linter contracts in pyproject.toml)."""
