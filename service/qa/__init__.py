"""Answering: retrieval, answer composition and the engine that serves a version."""
