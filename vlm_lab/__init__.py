"""vlm_lab: compare VLM checkpoints, profile their memory, log ablations, publish a Space."""

__version__ = "0.1.0"
