"""Token-Level Policy Optimization (TLPO) against language confusion in multilingual LLMs."""

__version__ = "0.1.0"
