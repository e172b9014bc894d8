"""Command-line interface. Each command group is one small module with ``register()``."""
