"""Byte-level interop tests against aiocoap (test-only dependency)."""
