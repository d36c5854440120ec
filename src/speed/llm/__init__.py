"""The LLM layer: backends, request cache, usage ledger, prompts and parsing."""
