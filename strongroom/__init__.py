"""Strongroom: de-identify, encrypt, fine-tune, evaluate and serve open LLMs on sensitive data."""

__version__ = "0.1.0"
