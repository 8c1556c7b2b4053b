"""Training: losses, schedules, pose labels, train state, pure train steps."""
