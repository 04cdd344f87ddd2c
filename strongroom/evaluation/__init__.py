"""Model evaluation (quality, privacy, security, fairness) and the release gate."""
