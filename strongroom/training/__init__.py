"""Fine-tuning core (placeholder while building)."""
