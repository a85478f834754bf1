"""vLLM-V1-style instance scheduler (see :mod:`llmsim.scheduler.scheduler`)."""

from llmsim.scheduler.config import SchedulerConfig
from llmsim.scheduler.plan import BatchPlan, Chunk, StepOutput
from llmsim.scheduler.scheduler import Scheduler
from llmsim.scheduler.state import SeqState, SeqStatus

__all__ = ["BatchPlan", "Chunk", "Scheduler", "SchedulerConfig", "SeqState", "SeqStatus",
           "StepOutput"]
