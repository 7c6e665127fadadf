"""leashed.sim."""
