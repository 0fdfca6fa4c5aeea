"""edgepack: plan, export, quantize and bundle a Hugging Face model for a concrete device."""

__version__ = "0.1.0"
