"""Studies (`smpc bench STUDY`): the study file (spec), measuring its cells (bench), and
the tables (report) and plots (plots) made from the records, printed alike (formatting)."""

from launch.study.spec import Cell, Study, load_study, parse_study

__all__ = ["Cell", "Study", "load_study", "parse_study"]
