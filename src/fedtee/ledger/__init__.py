"""fedtee.ledger."""
