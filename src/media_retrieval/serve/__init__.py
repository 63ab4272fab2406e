"""The HTTP search service and its web page: a thin face over :class:`MediaIndex` (FastAPI +
uvicorn). ``media-retrieval serve index_dir=...``; docs/search.md describes the API, its limits
and its security defaults."""
