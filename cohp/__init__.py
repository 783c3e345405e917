"""CoHP (Chain-of-Human-Preference): better images from the reward endpoint with no training (issue #7)."""
