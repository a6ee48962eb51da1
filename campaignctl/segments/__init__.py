"""Segments: conditions and features compiled to one SQL query per evaluation."""

from .compiler import CompiledQuery, CustomerColumns, check_segments, compile_segments, feature_column, segment_column
from .evaluate import Audiences, evaluate_segments, explain_segment, run_segments, sample_members, segments_query

__all__ = [
    "Audiences",
    "CompiledQuery",
    "CustomerColumns",
    "check_segments",
    "compile_segments",
    "evaluate_segments",
    "explain_segment",
    "feature_column",
    "run_segments",
    "sample_members",
    "segment_column",
    "segments_query",
]
