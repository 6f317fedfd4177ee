"""Image/video tokenizers: small trainable FSQ tokenizers and adapters for pretrained ones."""
