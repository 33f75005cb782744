"""Built-in models; importing this package registers each of them."""

from matting_core.models import u2netp_spec  # noqa: F401
