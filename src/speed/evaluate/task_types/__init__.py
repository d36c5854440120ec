"""Evaluation task types, one module and one ``TaskType`` class (see ``base``) each, as mteb has one class per type.
``TASK_TYPES`` maps a ``type`` of task.json to its class, in the order the reader lists them; the reader and the
runner look a task's type up there instead of branching on it."""

from .base import TaskType
from .classification import Classification
from .clustering import Clustering
from .pair_classification import PairClassification
from .reranking import Reranking
from .retrieval import Retrieval
from .sts import STS

TASK_TYPES: dict[str, type[TaskType]] = {t.name: t for t in (STS, Classification, PairClassification, Retrieval,
                                                             Reranking, Clustering)}
