"""The HTTP face: one Flask blueprint per module; each imports services, store and formats,
never another blueprint (tests/test_layering.py)."""
