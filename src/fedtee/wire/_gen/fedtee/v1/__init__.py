"""Generated fedtee.v1 messages and service stubs; do not edit."""
