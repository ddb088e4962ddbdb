"""Real infrastructure: a URL from the environment, or an embedded server on loopback."""
