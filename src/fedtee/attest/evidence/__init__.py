"""fedtee.attest.evidence."""
