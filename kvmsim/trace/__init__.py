"""Observers of the probe stream: recorders, reports, histograms (nothing below depends on them)."""
