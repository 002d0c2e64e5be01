"""The device-side training loop (onnxruntime + numpy only)."""
