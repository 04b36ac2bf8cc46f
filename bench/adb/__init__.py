"""PC agent over ADB: adb commands per second and open_url fan-out, through the real adb server, against the floor.

Per size (100 and 500 virtual phones), in one run:

1. **Throughput.** The real ``phonefleet.agent.agent.Agent`` runs against a real server; the driver posts a job
   whose plan is many cheap steps (``tap`` x 1 1) to every phone and waits until the job is ``completed`` in the
   database. Rate = ``input tap`` commands counted in the virtual phones' action logs / (completed - POST).
2. **Fan-out.** ``POST /api/jobs`` of one ``open_url`` (``duration_sec`` 0) until every phone's action log holds
   its VIEW intent (the record's own ``time.time()`` stamp minus the instant before the POST); a few runs, each
   after the previous job is ``completed`` and every phone is idle again.
3. **Floor**, same phones and adb server, in the same run: a bare asyncio client of the adb server's
   smart-socket protocol (``host:transport:SERIAL``, then ``shell:CMD`` read to the end or ``shell,v2:CMD`` read to
   its exit packet; one connection per command, nothing else), one command in flight per phone like the agent and
   at most 50 or 200 in flight in all, at least 3,000 commands per loop; the agent is printed as a ratio to the best
   of these. Beside it: bare adbutils ``shell2`` from 6 threads (what the agent ran before issue 14); the VIEW intent
   to every phone at once from the bare client (50 and 200 in flight) and from adbutils; the latency of one call.

Processes: the phonefleet server in a spawned child (as every benchmark); the adb server (the adbutils wheel's
binary, ``LocalAdbServer`` on a free port, never 5037) in its own process; the agent, its virtual phones and the
driver share this process and its event loop, as ``phonefleet-agent --virtual N`` runs them. ``--phones-apart``
puts the virtual phones in a child process of their own instead (closer to real phones, whose adbd work is not
on the agent's CPU). ``--profile`` samples this process with py-spy during the throughput jobs and prints where
its threads spend their time; ``--what-if`` tries agent-side changes from the outside.

The parts: ``workload`` (what is sent, per size), ``agent_run`` (the real agent's jobs), ``floor`` (bare loops),
``lean`` (a lean adb client), ``phones`` (the virtual phones, here or apart), ``cpu`` and ``spy`` (where the time
goes), ``whatif`` (agent-side changes tried from the outside), ``report`` (the printed figures), ``__main__``;
``startup`` (``python -m bench.adb.startup``: where the agent's start-up goes, without a server).
"""
