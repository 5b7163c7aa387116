"""Running the matrix: the pyperf worker (its own process) and the orchestrator of ``benchsvc run``."""
