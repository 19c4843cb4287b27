"""The stages as one run: config loading, freshness (skip what is unchanged), the runner."""
