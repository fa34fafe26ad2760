"""gnomon.objective layer."""
