# Score one image with plain tritonclient: python raw_tritonclient_example.py [URL [IMAGE [PROMPT]]]
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

defaults = ["127.0.0.1:8001", "examples/images/square_512.png", "a photo of a cat"]
url, image_path, prompt = sys.argv[1:] + defaults[len(sys.argv) - 1 :]

client = grpcclient.InferenceServerClient(url)
image = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")  # the encoded file bytes (PNG, JPEG, ...)
image.set_data_from_numpy(np.array([[Path(image_path).read_bytes()]], dtype=object))
text = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
text.set_data_from_numpy(np.array([[prompt.encode("utf-8")]], dtype=object))
result = client.infer("hpsv3", [image, text])
print(f"mu={result.as_numpy('MU')[0, 0]:.4f} sigma={result.as_numpy('SIGMA')[0, 0]:.4f}")
