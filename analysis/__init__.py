"""leashed.analysis."""
