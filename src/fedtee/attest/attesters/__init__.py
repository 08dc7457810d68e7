"""fedtee.attest.attesters."""
