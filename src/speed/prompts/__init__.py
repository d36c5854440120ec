"""Prompts (brainstorm, synthesis, judge, revise), JSON repair and per-kind validation of model outputs."""

from .attributes import ATTRIBUTES, Attribute, attribute_space, sample_attributes
from .brainstorm import brainstorm_messages
from .json_repair import extract_json
from .judge import judge_messages
from .parse import Parsed, parse_brainstorm, parse_example, parse_judge, parse_revision, validate_example
from .revise import revise_messages
from .schemas import (ASYMMETRIC_KINDS, BRAINSTORM_SCHEMA, EXAMPLE_KEYS, JUDGE_SCHEMA, REVISION_SCHEMA, TASK_KINDS,
                      canonical_kind, example_schema)
from .synthesis import GUIDELINES, SynthesisPrompt, plan_guidelines, synthesis_messages, synthesis_prompt

__all__ = [
    "ATTRIBUTES", "Attribute", "attribute_space", "sample_attributes", "brainstorm_messages", "judge_messages",
    "Parsed", "extract_json", "parse_brainstorm", "parse_example", "parse_judge", "parse_revision",
    "validate_example", "revise_messages", "ASYMMETRIC_KINDS", "BRAINSTORM_SCHEMA", "EXAMPLE_KEYS",
    "JUDGE_SCHEMA", "REVISION_SCHEMA", "TASK_KINDS", "canonical_kind", "example_schema", "GUIDELINES",
    "SynthesisPrompt", "plan_guidelines", "synthesis_messages", "synthesis_prompt",
]
