"""fedtee.sim."""
