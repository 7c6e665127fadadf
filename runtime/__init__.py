"""leashed.runtime."""
