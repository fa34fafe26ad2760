"""gnomon.trace layer."""
