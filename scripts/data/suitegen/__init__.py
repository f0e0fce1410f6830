"""Content and template engine for scripts/data/make_suite.py (stdlib only)."""
