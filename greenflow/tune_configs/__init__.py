"""tune_configs: Ray adapters (see DESIGN.md §4)."""
