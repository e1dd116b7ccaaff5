"""Build and test the agent image (issue: the agent image)."""
