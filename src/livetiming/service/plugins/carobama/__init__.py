"""carobama plugin."""
