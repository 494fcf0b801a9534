"""Checkpoint files: reading and writing both layouts safely, filters for foreign names,
resolving a file for a model, identifying the model a file holds, atomic writes."""
