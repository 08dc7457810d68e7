"""fedtee.server."""
