"""`edgekit serve`: a verified bundle behind an OpenAI-compatible HTTP API (FastAPI + uvicorn, imported only here)."""
