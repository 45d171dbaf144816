"""The open-loop load generator (a seeded request schedule over an app's request mix), used by
the profiler, the live evaluation and `ecoscale lab load`. Imports only the model and the
emulator's HTTP client."""
