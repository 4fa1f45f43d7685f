"""Model export: ONNX graphs with an onnxruntime parity check (inference.backends runs them)."""
