"""The AI diagnosis platform (人工智能诊断平台): model registry, local validation, field performance."""
