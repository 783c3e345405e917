"""Training and fine-tuning HPSv3 reward models into checkpoints the whole stack serves (`hpsv3 train`)."""
