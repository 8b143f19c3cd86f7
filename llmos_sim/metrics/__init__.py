"""Tables, summaries and plots: pure functions of a run's event log."""
from llmos_sim.metrics.fairness import jain_index
from llmos_sim.metrics.summary import training_summary
from llmos_sim.metrics.tables import events_table, jobs_table, memory_table, timeline_table

__all__ = ["events_table", "jobs_table", "memory_table", "timeline_table", "training_summary", "jain_index"]
