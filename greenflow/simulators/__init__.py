"""simulators: Ray adapters (see DESIGN.md §4)."""
