"""Prometheus metrics, on a registry of the app's own (several apps may share one process in tests)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.socket_events = Counter(
            "phonefleet_socket_events", "Socket.IO events received from agents", ["namespace", "event"],
            registry=self.registry,
        )
        self.assignments_created = Counter(
            "phonefleet_assignments_created", "Assignments created by the distributor", registry=self.registry
        )
        self.assignments_finished = Counter(
            "phonefleet_assignments_finished", "Assignments ended, by final status", ["status"],
            registry=self.registry,
        )
        self.fill_seconds = Histogram(
            "phonefleet_fill_seconds", "Time of one distributor fill pass", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.connected_agents = Gauge(
            "phonefleet_connected_agents", "Agents with a socket on this node", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
