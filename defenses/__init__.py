"""Training-data defenses (plugins registered with ``@poison.registry.defense``).

A defense receives training samples (prompt, response, task) and returns one suspicion score per sample; none ships
yet: the perplexity filter, bias classifier and LLM autorater are the subject of a later issue.
"""
