"""The networks behind the registry's specs (see matting_core/registry.py)."""
