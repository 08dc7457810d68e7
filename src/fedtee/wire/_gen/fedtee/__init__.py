"""Generated package; do not edit."""
