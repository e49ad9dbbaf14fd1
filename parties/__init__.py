"""The party: its lifecycle (party), a one-off run's workload (one_off) and a service's
(service). `smpc party CONFIG --name NAME` and `smpc serve CONFIG --name NAME` run one
(the command table is launch.cli)."""

__all__ = ["one_off", "party", "service"]
