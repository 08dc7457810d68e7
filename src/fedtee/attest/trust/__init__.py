"""fedtee.attest.trust."""
