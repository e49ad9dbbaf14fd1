"""The party program (`smpc party CONFIG --name NAME`, or `python -m parties`)."""

from parties.program import main, run_party

__all__ = ["main", "run_party"]
