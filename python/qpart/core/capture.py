"""Capture of a user's model as a QPART graph: ``torch.export`` (batch dimension dynamic),
then rebuilt as an ``fx.GraphModule`` over the operator allow-list of :mod:`.graph_ops`.

What the rebuilt graph holds:

* one placeholder ``x`` (the batched input; further ``forward`` arguments take their
  defaults), one tensor output;
* ``call_module`` of ``nn.Linear`` / ``nn.Conv2d`` for every ``aten.linear`` /
  ``aten.conv2d`` whose weight is a parameter: the learnable layers, named by the owning
  module's path (``"layer1.0.conv1"``). A BatchNorm that directly follows a conv (or a 2-D
  linear) and is its only user is folded into it, so the folded weights are what gets
  quantized;
* ``call_function`` of allow-listed ATen ops (in-place variants rewritten to functional
  ones, eval-mode dropout and aliases removed) and ``get_attr`` of every other tensor the
  graph reads (float BatchNorm parameters, buffers, constants), registered as buffers.

Anything else - a model ``torch.export`` cannot capture, a second required input, an op
outside the allow-list, a layer whose weight is used twice - raises :class:`ProfileError`
naming the op and where it is in the model.
"""

from __future__ import annotations

import inspect

import torch
from torch import fx, nn

from . import graph_ops
from .errors import ProfileError

_CONV2D_PADDING_OP = getattr(torch.ops.aten.conv2d, "padding", None)
_IDENTITY_OPS = {
    op
    for op in (
        getattr(torch.ops.aten.alias, "default", None),
        getattr(torch.ops.aten.dropout, "default", None),
        getattr(torch.ops.aten.feature_dropout, "default", None),
    )
    if op is not None
}
_KEEP_META = ("stack_trace", "nn_module_stack")


def _where(node: fx.Node) -> str:
    """``"in module 'layer1.0' (file.py:12)"`` for an exported node."""
    parts = []
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        path = path.removeprefix("L['self'].").removeprefix("L__self__")
        if path:
            parts.append(f"in module {path!r}")
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip().startswith("File ")]
    if lines:
        loc = lines[-1]
        try:
            file = loc.split('"')[1].rsplit("/", 1)[-1]
            line = loc.split("line ")[1].split(",")[0]
            parts.append(f"at {file}:{line}")
        except IndexError:
            pass
    return " ".join(parts) or "at the model's top level"


def _check_signature(model: nn.Module) -> None:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return
    required = [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if len(required) > 1:
        names = ", ".join(p.name for p in required)
        raise ProfileError(
            f"qpart: {type(model).__name__}.forward takes {len(required)} required inputs "
            f"({names}); a QPART model takes exactly one tensor (other arguments need defaults)"
        )


def export_model(model: nn.Module, example_input: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (eval mode) on ``example_input`` with a dynamic batch
    dimension; :class:`ProfileError` when it cannot be captured."""
    _check_signature(model)
    if not isinstance(model, fx.GraphModule):  # an unlifted exported program has no eval()
        model.eval()
    example = example_input
    if example.shape[0] < 2:  # a dynamic dimension needs an example size >= 2
        example = torch.cat([example] * 2)
    batch = torch.export.Dim.DYNAMIC
    try:
        with torch.no_grad():
            return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # export raises many types (UserError, TypeError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProfileError(
            f"qpart: torch.export cannot capture {type(model).__name__} with a dynamic batch "
            f"dimension ({type(exc).__name__}: {first}); the forward must be capturable by "
            "torch.export and work for any batch size"
        ) from exc


def _fqn_of_weight(target: str) -> str:
    return target[: -len(".weight")] if target.endswith(".weight") else target


class _Builder:
    """Rebuilds an exported program's graph over modules, buffers and allow-listed ops."""

    def __init__(self, ep: torch.export.ExportedProgram) -> None:
        self.ep = ep
        sig = ep.graph_signature
        self.tensor_inputs: dict[str, str] = {
            **sig.inputs_to_parameters,
            **sig.inputs_to_buffers,
            **sig.inputs_to_lifted_tensor_constants,
        }
        self.values = {**ep.state_dict, **ep.constants}
        self.user_inputs = list(sig.user_inputs)
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.buffer_names: dict[str, str] = {}

    # -- tensors and layers ------------------------------------------------------------

    def tensor(self, node: fx.Node) -> torch.Tensor:
        return self.values[self.tensor_inputs[node.name]]

    def is_tensor_input(self, arg) -> bool:
        return (
            isinstance(arg, fx.Node) and arg.op == "placeholder" and arg.name in self.tensor_inputs
        )

    def get_attr(self, node: fx.Node) -> fx.Node:
        fqn = self.tensor_inputs[node.name]
        name = self.buffer_names.get(fqn)
        if name is None:
            name = "const_" + "".join(c if c.isalnum() else "_" for c in fqn)
            while hasattr(self.root, name):
                name += "_"
            self.root.register_buffer(name, self.values[fqn].detach().clone())
            self.buffer_names[fqn] = name
        return self.graph.get_attr(name)

    def add_layer(self, fqn: str, module: nn.Module) -> None:
        parent = self.root
        *path, leaf = fqn.split(".")
        for part in path:
            child = getattr(parent, part, None)
            if not isinstance(child, nn.Module):
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, module)

    def layer_module(self, node: fx.Node) -> nn.Module:
        weight = self.tensor(node.args[1]).detach()
        bias_arg = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        bias = None if bias_arg is None else self.tensor(bias_arg).detach()
        if node.target is graph_ops.LINEAR_OP:
            mod = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        else:
            stride, padding, dilation, groups = _conv_args(node, weight)
            mod = nn.Conv2d(
                weight.shape[1] * groups,
                weight.shape[0],
                tuple(weight.shape[2:]),
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=bias is not None,
            )
        with torch.no_grad():
            mod.weight.copy_(weight)
            if bias is not None:
                mod.bias.copy_(bias)
        return mod.eval()


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return values * 2 if len(values) == 1 else values


def _conv_args(node: fx.Node, weight: torch.Tensor):
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    args = dict(zip(names, node.args))
    for key in names:
        if key not in args and key in node.kwargs:
            args[key] = node.kwargs[key]
    get = {k: args.get(k, defaults.get(k)) for k in names}
    stride, dilation = _pair(get["stride"]), _pair(get["dilation"])
    padding = get["padding"]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:
            total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
            if padding != "same" or any(t % 2 for t in total) or stride != (1, 1):
                raise ProfileError(
                    f"qpart: conv2d padding={padding!r} with an asymmetric or strided "
                    f"'same' padding is not supported ({_where(node)})"
                )
            padding = tuple(t // 2 for t in total)
    return stride, _pair(padding), dilation, int(get["groups"])


def _fold_batch_norm(layer: nn.Module, bn_args: list, builder: _Builder) -> None:
    """Folds ``batch_norm(layer(x), weight, bias, mean, var, False, momentum, eps)`` into
    ``layer``'s weight and bias."""
    _, gamma, beta, mean, var = bn_args[:5]
    eps = float(bn_args[7])
    mean_t, var_t = builder.tensor(mean).float(), builder.tensor(var).float()
    gamma_t = torch.ones_like(mean_t) if gamma is None else builder.tensor(gamma).float()
    beta_t = torch.zeros_like(mean_t) if beta is None else builder.tensor(beta).float()
    scale = gamma_t / torch.sqrt(var_t + eps)
    with torch.no_grad():
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(scale.reshape(shape))
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(mean_t)
        new_bias = (bias - mean_t) * scale + beta_t
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)


def _foldable_bn(node: fx.Node, layer_nodes: dict[fx.Node, str], builder: _Builder) -> bool:
    if node.target is not graph_ops.BATCH_NORM_OP:
        return False
    args = list(node.args)
    src = args[0]
    if src not in layer_nodes or len(src.users) != 1 or len(args) < 8 or args[5]:
        return False
    if not all(a is None or builder.is_tensor_input(a) for a in args[1:5]):
        return False
    if args[3] is None or args[4] is None:
        return False
    if src.target is graph_ops.LINEAR_OP:
        val = src.meta.get("val")
        return val is not None and val.dim() == 2
    return True


def _layer_nodes(builder: _Builder) -> dict[fx.Node, str]:
    """The ``aten.linear`` / ``aten.conv2d`` nodes with parameter weights -> layer name."""
    layer_ops = {graph_ops.LINEAR_OP, graph_ops.CONV2D_OP, _CONV2D_PADDING_OP}
    layers: dict[fx.Node, str] = {}
    owner: dict[str, fx.Node] = {}
    for node in builder.ep.graph.nodes:
        if node.op != "call_function" or node.target not in layer_ops:
            continue
        weight = node.args[1]
        if not builder.is_tensor_input(weight):
            raise ProfileError(
                f"qpart: {graph_ops.describe(node.target)} {_where(node)} has a computed "
                "weight; only layers whose weight is a parameter can be quantized"
            )
        fqn = builder.tensor_inputs[weight.name]
        if fqn in owner:
            raise ProfileError(
                f"qpart: layer {_fqn_of_weight(fqn)!r} is called more than once "
                f"({_where(owner[fqn])} and {_where(node)}); a QPART layer runs once per "
                "forward (give each call its own module)"
            )
        owner[fqn] = node
        layers[node] = _fqn_of_weight(fqn)
    for node in builder.ep.graph.nodes:  # a layer weight read by anything else
        for arg in node.all_input_nodes:
            fqn = builder.tensor_inputs.get(arg.name) if arg.op == "placeholder" else None
            if fqn in owner and not (node in layers and node.args[1] is arg):
                raise ProfileError(
                    f"qpart: the weight of layer {_fqn_of_weight(fqn)!r} is also read by "
                    f"{graph_ops.describe(node.target)} {_where(node)}; shared weights are "
                    "not supported"
                )
    return layers


def _copy_meta(src: fx.Node, dst: fx.Node) -> None:
    for key in ("val", *_KEEP_META):
        if key in src.meta:
            dst.meta[key] = src.meta[key]


def _localize_sizes(graph: fx.Graph) -> None:
    """Moves every ``sym_size`` next to its users, reading a local tensor with the same
    symbolic size, so that a batch size read at the top of ``forward`` does not cross
    (and thereby rule out) every cut below it."""
    sym_size = graph_ops.SUPPORTED_OPS.get("aten.sym_size.int")
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not sym_size:
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.SymInt):
            continue
        for user in list(node.users):
            local = None
            for arg in user.all_input_nodes:
                val = arg.meta.get("val")
                if arg is node or not isinstance(val, torch.Tensor):
                    continue
                for dim, size in enumerate(val.shape):
                    if isinstance(size, torch.SymInt) and str(size) == str(value):
                        local = (arg, dim)
                        break
                if local:
                    break
            if local is None or local[0] is node.args[0]:
                continue
            with graph.inserting_before(user):
                fresh = graph.call_function(sym_size, local)
            fresh.meta["val"] = value
            user.replace_input_with(node, fresh)
        if not node.users:
            graph.erase_node(node)


def _build_graph(builder: _Builder) -> fx.GraphModule:
    ep, graph, env = builder.ep, builder.graph, builder.env
    layers = _layer_nodes(builder)
    unsupported: list[str] = []
    modules: dict[str, nn.Module] = {}

    def lookup(arg: fx.Node) -> fx.Node:
        if arg not in env:
            if builder.is_tensor_input(arg):
                env[arg] = builder.get_attr(arg)
            else:
                raise ProfileError(f"qpart: node {arg.name!r} is used before it is computed")
        return env[arg]

    def map_args(value):
        return fx.node.map_arg(value, lookup)

    output = None
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in builder.tensor_inputs:
                continue
            if node.name not in builder.user_inputs:
                raise ProfileError(f"qpart: unexpected graph input {node.name!r}")
            env[node] = graph.placeholder("x")
            _copy_meta(node, env[node])
        elif node.op == "output":
            outs = [o for o in node.args[0] if o is not None]
            if len(outs) != 1 or not isinstance(outs[0], fx.Node):
                raise ProfileError(
                    f"qpart: the model must return one tensor, it returns {len(outs)} values"
                )
            output = lookup(outs[0])
        elif node.op != "call_function":
            raise ProfileError(f"qpart: unsupported graph node {node.name!r} ({node.op})")
        elif node in layers:
            name = layers[node]
            modules[name] = builder.layer_module(node)
            builder.add_layer(name, modules[name])
            env[node] = graph.call_module(name, (lookup(node.args[0]),))
            _copy_meta(node, env[node])
        elif _foldable_bn(node, layers, builder):
            _fold_batch_norm(modules[layers[node.args[0]]], list(node.args), builder)
            env[node] = env[node.args[0]]
        elif node.target in _IDENTITY_OPS and (
            node.target is torch.ops.aten.alias.default or not node.args[2]
        ):
            env[node] = lookup(node.args[0])
        else:
            target = node.target
            functional = graph_ops.functional_of(target)
            if functional is not None:
                target = functional
            if graph_ops.op_name(target) is None:  # reported after the loop, with the others
                unsupported.append(f"{graph_ops.describe(node.target)} {_where(node)}")
            new = graph.call_function(target, map_args(node.args), map_args(node.kwargs))
            _copy_meta(node, new)
            env[node] = new
            if functional is not None and isinstance(node.args[0], fx.Node):
                env[node.args[0]] = new  # later readers of the mutated tensor see the result
    if unsupported:
        listing = "\n  ".join(unsupported)
        raise ProfileError(
            f"qpart: the model uses {len(unsupported)} operation(s) outside the supported set "
            f"(docs/SERVING.md lists it):\n  {listing}"
        )
    if not modules:
        raise ProfileError("qpart: the model has no nn.Linear / nn.Conv2d layer")
    graph.output(output)
    gm = fx.GraphModule(builder.root, graph)
    gm.graph.eliminate_dead_code()
    _localize_sizes(gm.graph)
    for n in gm.graph.nodes:  # symbolic fake values do not survive deepcopy / pickling well
        n.meta.pop("val", None)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def capture(
    model: nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor
) -> fx.GraphModule:
    """The QPART graph of ``model`` (or of an already exported program) for inputs shaped
    like ``example_input`` (batch first); see the module docstring. Raises
    :class:`ProfileError` with the op and its place in the model for anything unsupported."""
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise ProfileError("qpart: example_input must be a batched tensor (batch first)")
    if isinstance(model, torch.export.ExportedProgram):
        # re-exported with a dynamic batch dimension (a program saved with a static batch
        # size would otherwise only run at that size)
        ep = export_model(model.module(check_guards=False), example_input)
    elif isinstance(model, nn.Module):
        ep = export_model(model, example_input)
    else:
        raise ProfileError(
            f"qpart: expected an nn.Module or torch.export.ExportedProgram, got "
            f"{type(model).__name__}"
        )
    builder = _Builder(ep)
    if len(builder.user_inputs) != 1:
        raise ProfileError(
            f"qpart: the captured model takes {len(builder.user_inputs)} tensor inputs; "
            "a QPART model takes exactly one"
        )
    return _build_graph(builder)
