"""Sequence backbones (one file per architecture), the SB3 extractor wrapper and the registry."""
