"""fedtee.client."""
