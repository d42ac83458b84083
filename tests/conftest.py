"""Shared test setup. Scenario files are collected by kvmsim.scenario.pytest_plugin (pyproject addopts)."""
