"""cutout's matting core: pure functions on arrays plus the model.

Stages, one module each: decode -> preprocess -> model -> postprocess ->
compose -> encode. Nothing here imports Flask, Celery, Redis or boto3.
"""
