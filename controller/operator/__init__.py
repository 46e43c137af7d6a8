"""The Kubernetes operator: the API server as the agent's source of desired state and sink of status.

Owns: everything that talks to the API server -- the kopf watches feeding translation
(source.py), the client wrapper that keeps every kubernetes-client call off the event loop
(kube.py), the Lease that elects one summary writer per RouteServer (lease.py), and the status
sinks (RouteServerSession objects, conditions, Kubernetes Events).

May not touch: the runtime's internals (it drives the agent through `Agent.submit` and reads
`AgentStatus`), writers, protocol cores. Only this package imports kopf or kubernetes
(import-linter).
"""
