"""The asyncio gRPC client of the HPSv3 Triton endpoint, and the reward callable for RL trainers built on it."""

from .hpsv3_client import HPSv3Client, ModelNotReadyError, ServerUnavailableError
from .reward import HPSv3Reward, RewardError

__all__ = ["HPSv3Client", "HPSv3Reward", "ModelNotReadyError", "RewardError", "ServerUnavailableError"]
