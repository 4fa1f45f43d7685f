"""Prediction: Predictor API, face detection, frame sources, drawing."""
