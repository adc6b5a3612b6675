"""One router per resource of the API (FastAPI's bigger-applications layout)."""
