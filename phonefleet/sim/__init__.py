"""Protocol-level simulated agents: Socket.IO clients that pretend to hold phones (tests, benchmarks)."""
