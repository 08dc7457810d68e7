"""fedtee.attest.verify."""
