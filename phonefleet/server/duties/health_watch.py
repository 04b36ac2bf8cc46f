"""The health watch: the parts of the quarantine policy that time, not an event, decides."""

from phonefleet.server.fleet_health import FleetHealth


class HealthWatch:
    """Each run: phones unhealthy for longer than the policy allows are quarantined, and quarantined phones past
    their cool-down are asked for the self-test. (Failure streaks are judged as results arrive, by
    ``Completion``: a streak the check missed is judged again at the phone's next failure, so no scan of
    recent results runs here: at 10,000 results a second it would cost more than all the rest.)"""

    name = "health_watch"

    def __init__(self, fleet_health: FleetHealth, *, interval_sec: float, batch: int = 500) -> None:
        self.interval_sec = interval_sec
        self.batch = batch
        self.fleet_health = fleet_health

    async def run_once(self) -> int:
        quarantined = await self.fleet_health.check_long_illness(self.batch)
        asked = await self.fleet_health.ask_selftests(self.batch)
        return max(len(quarantined), asked)
