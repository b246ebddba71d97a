"""Inference: batch classification (and, with generation, reading text back out).

    from lmtool.inference import classify
"""

from __future__ import annotations

from lmtool.inference.classify import classify

__all__ = ["classify"]
