"""Protocol-faithful Asterisk simulators for tests and benchmarks (built from shared/asterisk-traces/)."""
