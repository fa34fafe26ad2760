"""gnomon.thetaspace layer."""
