"""The Triton model repository: templates per model, rendering for a target, and the server launcher."""
