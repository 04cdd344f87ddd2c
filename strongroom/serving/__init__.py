"""Secure inference gateway: OpenAI-compatible API behind TLS, keys, RBAC, guards and audit."""
