"""Model export: ONNX with an onnxruntime parity check, and the onnxruntime-backed predictor."""
