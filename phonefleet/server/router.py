"""Messages from other server nodes (and the CLI), each to the service it concerns."""

from phonefleet.server.bus_messages import BusMessage, Dirty, FillAll, Kick, Revoked, ToAgent, ToDashboards
from phonefleet.server.dashboard_push import DashboardPush
from phonefleet.server.distributor import Distributor
from phonefleet.server.realtime import Realtime
from phonefleet.server.revocations import Revocations


class Router:
    def __init__(self, realtime: Realtime, push: DashboardPush, distributor: Distributor,
                 revocations: Revocations) -> None:
        self.realtime = realtime
        self.push = push
        self.distributor = distributor
        self.revocations = revocations

    async def dispatch(self, message: BusMessage) -> None:
        match message:
            case ToAgent():
                await self.realtime.to_local_agent(message.agent_id, message.event, message.data)
            case Kick():
                held = [a for a in message.ids() if self.realtime.has_agent(a)]
                if held:
                    await self.distributor.resend_pending(held)
            case Dirty():
                await self.push.show_remote(message)
            case ToDashboards():
                await self.push.emit(message.event, message.data, to=message.rooms)
            case FillAll():
                self.distributor.request_fill()
            case Revoked():
                await self.revocations.apply(message)
