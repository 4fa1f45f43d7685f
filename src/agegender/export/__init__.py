"""Model export: every output format behind one table (formats.py): ONNX graphs with an onnxruntime
parity check, float32 or int8 (onnx.py, quantize.py), and float16 checkpoints (half.py)."""
