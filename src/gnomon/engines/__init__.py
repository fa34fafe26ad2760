"""gnomon.engines layer."""
