"""Example trainers shipped with fedtee (the demo uses :mod:`.digits`)."""
