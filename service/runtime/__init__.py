"""Model runtime: the artifact card, execution providers, onnxruntime sessions and the registry."""
