"""Prometheus metrics, on a registry of the app's own (several apps may share one process in tests)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from phonefleet.server.store.stats import FleetCounts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text format, as ``generate_latest`` writes it."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fleet_registry = CollectorRegistry()
        """The gauges counted in the database: left out of a scrape that could not read it."""
        self.socket_events = Counter(
            "phonefleet_socket_events", "Socket.IO events received from agents and dashboards", ["namespace", "event"],
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
        self.run_seconds = Histogram(
            "phonefleet_assignment_run_seconds", "Run time of assignments on the phone (started to finished)",
            ["status"], registry=self.registry,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.fanout_seconds = Histogram(
            "phonefleet_fanout_seconds", "From the start of a fill to its job:assign events sent to the agents",
            registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.connected_agents = Gauge(
            "phonefleet_connected_agents", "Agents with a socket on this node", registry=self.registry
        )
        self.database_up = Gauge(
            "phonefleet_database_up", "1 when this scrape could read the database, else 0", registry=self.registry
        )
        # Cluster-wide, from the database at scrape time (see ``set_fleet``): every node answers the same.
        self.assignments = Gauge("phonefleet_assignments", "Assignments by status", ["status"],
                                 registry=self.fleet_registry)
        self.jobs = Gauge("phonefleet_jobs", "Jobs by status", ["status"], registry=self.fleet_registry)
        self.devices = Gauge("phonefleet_devices", "Phones by state", ["state"], registry=self.fleet_registry)
        self.agents_connected = Gauge(
            "phonefleet_agents_connected", "Agents seen within the grace period, on any node",
            registry=self.fleet_registry,
        )
        self.artifacts_deleted = Counter(
            "phonefleet_artifacts_deleted", "Artifacts the retention duty deleted, by reason (age or size)",
            ["reason"], registry=self.registry,
        )
        self.artifact_bytes_deleted = Counter(
            "phonefleet_artifact_bytes_deleted", "Bytes of artifacts the retention duty deleted, by reason",
            ["reason"], registry=self.registry,
        )
        self.recovery_attempts = Counter(
            "phonefleet_recovery_attempts", "Recovery rungs run on phones, by rung and outcome", ["rung", "outcome"],
            registry=self.registry,
        )
        phone = ["serial", "agent"]
        self.device_battery = Gauge("phonefleet_device_battery_percent", "Battery level of each phone", phone,
                                    registry=self.fleet_registry)
        self.device_temperature = Gauge("phonefleet_device_battery_celsius", "Battery temperature of each phone",
                                        phone, registry=self.fleet_registry)
        self.device_success = Gauge("phonefleet_device_success_ratio",
                                    "Completed share of each phone's runs that ended in the last hour", phone,
                                    registry=self.fleet_registry)
        self.device_healthy = Gauge("phonefleet_device_available",
                                    "1 when the phone may take work (idle or busy), else 0", phone,
                                    registry=self.fleet_registry)

    def set_fleet(self, counts: FleetCounts) -> None:
        """The gauges counted in the database, refreshed by each scrape."""
        for status, n in counts.assignments.items():
            self.assignments.labels(status=status).set(n)
        for status, n in counts.jobs.items():
            self.jobs.labels(status=status).set(n)
        for state, n in counts.devices.items():
            self.devices.labels(state=state).set(n)
        self.agents_connected.set(counts.agents["connected"])
        for gauge in (self.device_battery, self.device_temperature, self.device_success, self.device_healthy):
            gauge.clear()  # phones that went away take their series with them
        for p in counts.phones:
            labels = {"serial": p.serial, "agent": p.agent}
            if p.battery is not None:
                self.device_battery.labels(**labels).set(p.battery)
            if p.battery_temp_c is not None:
                self.device_temperature.labels(**labels).set(p.battery_temp_c)
            if p.success_rate_1h is not None:
                self.device_success.labels(**labels).set(p.success_rate_1h)
            self.device_healthy.labels(**labels).set(1 if p.state in ("idle", "busy") else 0)

    def render(self, *, fleet: bool = True) -> bytes:
        """The text format; ``fleet=False`` when the database could not be read (stale counts would lie)."""
        local = generate_latest(self.registry)
        return local + generate_latest(self.fleet_registry) if fleet else local
