"""imagegen: an HTTP image-generation inference service for ONNX GAN and VAE models."""

__version__ = "0.1.0"
