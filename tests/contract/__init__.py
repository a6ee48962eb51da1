"""The data-source contract harness (see test_data_sources.py)."""
