"""gnomon.util: the bottom layer — small helpers that import no other gnomon module (see docs/architecture.md)."""
