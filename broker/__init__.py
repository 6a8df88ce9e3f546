"""The broker room: routes MDP/0.2 (ZeroMQ RFC 18) requests from clients to workers.

Owns the two ROUTER sockets (client frontend, worker backend), the
per-service request queues and idle-worker lists, worker liveness by
heartbeats, re-dispatch of requests whose worker was lost, the broker's own
error replies (``busy``, ``no_worker``, ``worker_lost``), image affinity
(a request naming an ``image_key`` goes to an idle worker that recently
served that key) and the MMI services ``mmi.service`` / ``mmi.services``.

It never imports torch or sam2 and never decompresses a body: it only peeks
at the small JSON header frame for the request id and image key.

Modules: ``config`` (every tunable, once), ``records`` (worker, service and
request records, counters), ``mmi`` (management replies), ``broker`` (the
poll loop) and ``__main__`` (command line).
"""

from broker.broker import Broker
from broker.config import BrokerConfig

__all__ = ["Broker", "BrokerConfig"]
