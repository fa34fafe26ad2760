"""gnomon.artifacts layer."""
