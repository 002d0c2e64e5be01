"""Deploy: trained checkpoint -> optimized, quantized inference bundle for a device profile.

Everything here runs with onnxruntime, onnx and numpy only (no torch), so a device can deploy
its own fine-tuned model.
"""
