"""fedtee.wire."""
