"""A real local Kubernetes cluster for the end-to-end tests and ``make demo`` (test infrastructure, not product)."""
