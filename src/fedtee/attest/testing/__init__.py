"""fedtee.attest.testing."""
