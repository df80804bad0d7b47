"""Offline training of the served networks: data, GAN and VAE, evaluation and ONNX export.

Importing this package does not import TensorFlow; the modules that need it do.
"""
