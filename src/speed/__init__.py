"""speed: SPEED - small aligned LLMs as efficient generators of text-embedding training data."""

__version__ = "0.1.0"
