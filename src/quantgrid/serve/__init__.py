"""Serving: the base, the release and named adapters over OpenAI- and Ollama-compatible APIs.

engine.py (batched multi-adapter generation) <- router.py (model names, ``auto``) <-
upstream.py (fallback chain) <- app.py (``create_app(settings)``). Only app.py imports
FastAPI; only the engine and its helpers import torch.
"""
