"""Renderings of a Plan: text (the terminal, Terraform-like), Markdown (a pull-request comment), JSON."""

from .json import render_json
from .markdown import render_markdown
from .text import render_text

__all__ = ["render_json", "render_markdown", "render_text"]
