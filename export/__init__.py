"""ONNX export of the HPSv3 stages (vision encoder, language tower, reward head) with parity checks."""
