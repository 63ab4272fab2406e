"""Content-based visual media retrieval."""
