"""Adapters in production: routing gate, canary rollouts, monitoring and the review queue."""
