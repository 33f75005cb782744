"""A state dict for a U²-Net from the initializers of its published ONNX export."""

import numpy as np
from torch import nn

from matting_core.errors import WeightsError

# Named in the exports; every other conv is a body conv with an anonymous initializer.
_NAMED_PREFIXES = tuple(f"side{i}." for i in range(1, 7)) + ("outconv.",)


def convert_onnx(path: str, net: nn.Module) -> dict[str, np.ndarray]:
    """The export's body Conv nodes appear in execution order, which is the order the network
    registers its convs; side1..6 and outconv keep their own names. Every key and shape is
    checked against `net`, so a file for another architecture is refused, not half-loaded."""
    import onnx  # convert-time dependency only
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    body = [n for n in graph.node if n.op_type == "Conv" and not n.input[1].startswith(_NAMED_PREFIXES)]
    expected = net.state_dict()
    kind = type(net).__name__
    body_keys = [k for k in expected if k.endswith(".weight") and not k.startswith(_NAMED_PREFIXES)]
    if len(body) != len(body_keys):
        raise WeightsError(f"{path}: {len(body)} body convs in the export, {kind} has {len(body_keys)}")
    state = {k: v for k, v in inits.items() if k.startswith(_NAMED_PREFIXES)}
    for node, key in zip(body, body_keys, strict=True):
        state[key] = inits[node.input[1]]
        state[key.removesuffix("weight") + "bias"] = inits[node.input[2]]
    for key, tensor in expected.items():
        if key not in state or tuple(state[key].shape) != tuple(tensor.shape):
            got = None if key not in state else tuple(state[key].shape)
            raise WeightsError(f"{path}: {key} is {got} in the export, {kind} wants {tuple(tensor.shape)}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
