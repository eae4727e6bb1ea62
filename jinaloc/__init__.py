"""jinaloc: local embeddings and offline semantic search with Jina's v5 models."""

__version__ = "0.1.0"
