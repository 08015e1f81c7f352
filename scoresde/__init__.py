"""scoresde."""
