"""Inference backends the gateway can front: transformers (reference), upstream, optional ones."""

from strongroom.serving.backends.base import Backend, Generation, GenParams, apply_stop

__all__ = ["Backend", "GenParams", "Generation", "apply_stop"]
