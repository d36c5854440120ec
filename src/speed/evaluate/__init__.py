"""Evaluation of embedding models on task folders with the MTEB 1.12 protocol, with an embedding cache."""

from .cache import EmbeddingCache, default_cache_path, model_identity
from .encoder import QUERY_TEMPLATE, Encoder, with_instruction
from .runner import evaluate_model, evaluate_task, format_table
from .tasks import TASK_TYPES, Task, builtin_dir, builtin_tasks, discover, load_task, load_tasks

__all__ = ["EmbeddingCache", "default_cache_path", "model_identity", "QUERY_TEMPLATE", "Encoder", "with_instruction",
           "evaluate_model", "evaluate_task", "format_table", "TASK_TYPES", "Task", "builtin_dir", "builtin_tasks",
           "discover", "load_task", "load_tasks"]
