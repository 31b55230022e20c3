"""serve_apps: Ray adapters (see DESIGN.md §4)."""
