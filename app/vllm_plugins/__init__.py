"""Modules that vLLM itself imports (this folder goes on its PYTHONPATH): they import nothing from Groundwork."""
