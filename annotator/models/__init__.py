"""Model families, how to get their weights, the predictor protocol they share, and the runtimes
(PyTorch, ONNX Runtime, OpenVINO) that run them."""
