"""rmt-tui's engine: spectra, random-matrix noise thresholds, Avew, checkpoints, truncation and
evaluation. Nothing here imports Textual or Rich."""

__version__ = "0.1.0"
