"""Who is connected to this node: agent sockets by agent, dashboard sockets, and the tokens they used.

Memory only (a cache of this node's sockets); the database says which agents are alive cluster-wide.
"""

from phonefleet.server.auth import Principal
from phonefleet.server.metrics import Metrics


class Presence:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._agent_sids: dict[int, str] = {}
        self._sid_agents: dict[str, Principal] = {}
        self._plans_once: set[str] = set()
        """Agent sids that named the ``plans_once`` feature when they connected."""
        self.dashboards: set[str] = set()
        self._dashboard_principals: dict[str, Principal] = {}
        """sid -> who connected it (a session, a personal token or an admin token), checked again on revocations."""

    def remember_agent(self, sid: str, principal: Principal, *, plans_once: bool = False) -> None:
        assert principal.agent_id is not None
        self._agent_sids[principal.agent_id] = sid
        self._sid_agents[sid] = principal
        if plans_once:
            self._plans_once.add(sid)
        self.metrics.connected_agents.set(len(self._agent_sids))

    def forget_agent(self, sid: str) -> None:
        self._plans_once.discard(sid)
        principal = self._sid_agents.pop(sid, None)
        if principal is not None and self._agent_sids.get(principal.agent_id or -1) == sid:
            del self._agent_sids[principal.agent_id or -1]
        self.metrics.connected_agents.set(len(self._agent_sids))

    def agent_principal(self, sid: str) -> Principal | None:
        return self._sid_agents.get(sid)

    def agent_sid(self, agent_id: int) -> str | None:
        return self._agent_sids.get(agent_id)

    def agent_count(self) -> int:
        """Agent sockets on this node."""
        return len(self._agent_sids)

    def takes_plans_once(self, sid: str) -> bool:
        """The agent on ``sid`` reads a ``job:assign`` whose jobs come once (``events.PLANS_ONCE``)."""
        return sid in self._plans_once

    def agent_sessions(self) -> list[tuple[str, Principal]]:
        return list(self._sid_agents.items())

    def remember_dashboard(self, sid: str, principal: Principal) -> None:
        self.dashboards.add(sid)
        self._dashboard_principals[sid] = principal

    def dashboard_principal(self, sid: str) -> Principal | None:
        return self._dashboard_principals.get(sid)

    def update_dashboard(self, sid: str, principal: Principal) -> None:
        """The dashboard's principal as it now stands (its teams changed)."""
        if sid in self.dashboards:
            self._dashboard_principals[sid] = principal

    def forget_dashboard(self, sid: str) -> None:
        """The socket is being dropped: no longer a dashboard to tell or check; who it was stays known until its
        disconnect (``dashboard_closed``), which ends what it did in their name."""
        self.dashboards.discard(sid)

    def dashboard_closed(self, sid: str) -> Principal | None:
        """The socket's disconnect: forgotten, and who it was returned."""
        self.dashboards.discard(sid)
        return self._dashboard_principals.pop(sid, None)

    def dashboard_sessions(self) -> list[tuple[str, Principal]]:
        """Dashboards and who connected each."""
        return [(sid, p) for sid, p in self._dashboard_principals.items() if sid in self.dashboards]
