"""Scenario files: schema, loader, expectations and the pytest plugin."""
