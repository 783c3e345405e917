"""The asyncio gRPC client of the HPSv3 Triton endpoint."""

from .hpsv3_client import HPSv3Client, ModelNotReadyError, ServerUnavailableError

__all__ = ["HPSv3Client", "ModelNotReadyError", "ServerUnavailableError"]
