"""fedtee.cli."""
