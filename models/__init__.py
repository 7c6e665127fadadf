"""leashed.models."""
