"""Conversations: each user's chat history and feedback (store.py) and asking within a conversation (service.py)."""
