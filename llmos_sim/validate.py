"""Checks on what users type: one error family, small value checks, and the config check.

Every bad input ends in an :class:`InputError` whose message names where the problem is: the
config key (``config key 'workload.load': must be > 0, got -1.0``) or the file and line
(``trace.csv: line 7: column 'duration': ...``). ``python -m llmos_sim`` prints that one line
and exits with status 1; any other exception is a bug and keeps its traceback.

- :class:`ConfigError`: a config value; raised by the helpers below (:func:`positive`,
  :func:`non_negative`, :func:`finite`, :func:`count`, :func:`int_seed`, :func:`choice`,
  :func:`flag`) and by :func:`check_config`.
- file errors subclass :class:`InputError` where the files are read
  (:class:`llmos_sim.workload.base.TraceError`, :class:`llmos_sim.workload.requests.WorkloadError`,
  :class:`llmos_sim.memtrace.trace.TraceFormatError`).

:func:`check_config` checks a composed config before anything is built:

1. every number anywhere in it is finite and an integer fits in int64; every number is
   ``>= 0`` except those named in :data:`SIGNED_KEYS` (regression coefficients, priorities);
2. the run's own keys (``seed``, ``mode``, ``engine.*``, ``serving.*``, ``output.*``,
   ``services.*``) against :data:`SCHEMA` (type, bounds, allowed words);
3. every component (a node with ``_target_``: workload, cluster, scheduler, ...) against its
   class's signature: each key must be a parameter of the class and match its annotation
   (``int``, ``float``, ``bool``, ``str``, ``None``, literal words, sequences of those); a
   component without ``_target_`` or whose class cannot be imported is named with the key;
4. a few bounds that hold for a key whatever class uses it (:data:`KEY_RULES`: ``load`` and
   ``rate_scale`` > 0, ``gpu_memory_utilization`` in (0, 1], ...).

Classes still check what only they know (a trace's columns, a scheduler's thresholds order);
:func:`named_error` turns such a check raised while Hydra builds the object into one line that
names the config key.
"""
from __future__ import annotations

import inspect
import math
import numbers
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Callable

INT64_MAX = 2**63 - 1


class InputError(ValueError):
    """Bad input from the user: a config value or an input file. The message names the config
    key or the file and line; the command line prints it as one line and exits with 1."""


class ConfigError(InputError):
    """A bad config value; the message starts with ``config key '<dotted.key>':``."""

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(f"config key {key!r}: {msg}")
        self.key = key


# -- value checks (usable from any constructor) -------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def finite(key: str, value: Any) -> float:
    """``value`` as a finite float (not NaN, not ±inf, not a bool or a word)."""
    if not _is_number(value):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if isinstance(value, numbers.Integral):
        if abs(int(value)) > INT64_MAX:
            raise ConfigError(key, f"must be below 2**63, got {value}")
        return float(value)
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    return v


def non_negative(key: str, value: Any) -> float:
    """``value`` as a finite float ``>= 0``."""
    v = finite(key, value)
    if v < 0:
        raise ConfigError(key, f"must be >= 0, got {value!r}")
    return v


def positive(key: str, value: Any) -> float:
    """``value`` as a finite float ``> 0``."""
    v = finite(key, value)
    if v <= 0:
        raise ConfigError(key, f"must be > 0, got {value!r}")
    return v


def fraction(key: str, value: Any) -> float:
    """``value`` as a float in ``(0, 1]``."""
    v = finite(key, value)
    if not 0 < v <= 1:
        raise ConfigError(key, f"must be in (0, 1], got {value!r}")
    return v


def probability(key: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1]``."""
    v = finite(key, value)
    if not 0 <= v <= 1:
        raise ConfigError(key, f"must be in [0, 1], got {value!r}")
    return v


def count(key: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an integer in ``[minimum, 2**63)``: a float with a fraction (``1.5``) or a
    bool is refused, not truncated."""
    if not _is_number(value):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if not isinstance(value, numbers.Integral):
        v = float(value)
        if not math.isfinite(v) or v != int(v):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        value = int(v)
    if int(value) > INT64_MAX:
        raise ConfigError(key, f"must be below 2**63, got {value}")
    if value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value}")
    return int(value)


def optional_count(key: str, value: Any, minimum: int = 0) -> int | None:
    """``None`` or :func:`count`."""
    return None if value is None else count(key, value, minimum)


def int_seed(value: Any, key: str = "seed") -> int:
    """A run seed: an integer in ``[0, 2**63)`` (``numpy.random.SeedSequence`` wants one >= 0)."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(key, f"must be an integer >= 0, got {value!r}") from None
    return count(key, value, 0)


def choice(key: str, value: Any, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ConfigError(key, f"must be one of {list(options)}, got {value!r}")
    return value


def flag(key: str, value: Any) -> bool:
    """``value`` if it is a bool (``true``/``false`` on the command line)."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


# -- the schema of the run's own keys -----------------------------------------------------
def _opt(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda key, v: None if v is None else check(key, v)


def _words(*options: str) -> Callable[[str, Any], Any]:
    return lambda key, v: choice(key, v, options)


def _str(key: str, v: Any) -> str:
    if not isinstance(v, (str, int)) or isinstance(v, bool):
        raise ConfigError(key, f"must be a word, got {v!r}")
    return str(v)


def _int(minimum: int) -> Callable[[str, Any], int]:
    return lambda key, v: count(key, v, minimum)


#: groups whose every key is listed in SCHEMA (any other key there is a typo)
CLOSED_GROUPS = ("engine",)

#: the keys the run itself reads (not a component's arguments): dotted key -> check.
#: Keys not listed here are left alone (components check their own).
SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "seed": lambda key, v: int_seed(v, key),
    "mode": _words("training", "serving", "mixed", "calibrate"),
    "name": _str,
    "engine.round_s": _opt(positive),
    "engine.on_memory_full": _words("wait", "fail", "preempt"),
    "engine.preempt_overhead_s": non_negative,
    "engine.resize_overhead_s": non_negative,
    "engine.log_memory": flag,
    "engine.until_s": _opt(non_negative),
    "engine.pass_per_event": flag,
    "engine.fast_path": _words("auto", "off"),
    "output.plots": flag,
    "output.trace": flag,
    "output.resume": flag,
    "output.progress": flag,
    "output.objective": _str,
    "serving.replicas": _int(1),
    "serving.tp": _int(1),
    "serving.gpu_memory_utilization": fraction,
    "serving.activation_reserve_bytes": _int(0),
    "serving.num_kv_blocks": _opt(_int(1)),
    "serving.block_tokens": _int(1),
    "serving.kv_mode": _words("grow", "reserve", "auto"),
    "serving.reserve_tokens": _int(0),
    "serving.slo_ttft_s": _opt(positive),
    "serving.slo_tpot_s": _opt(positive),
    "serving.slo_e2e_s": _opt(positive),
    "serving.host_kv_bytes": _opt(non_negative),
    "serving.max_time_s": _opt(non_negative),
    "serving.fast_forward": flag,
    "serving.per_iteration_records": flag,
    "serving.prefix_caching": flag,
    "serving.async_scheduling": flag,
    "serving.span_cut": _words("own", "any"),
    "topology.kind": _words("colocated", "disaggregated"),
    "topology.prefill.replicas": _int(1),
    "topology.prefill.tp": _opt(_int(1)),
    "topology.decode.replicas": _int(1),
    "topology.decode.tp": _opt(_int(1)),
    "topology.link.bw_bytes_s": positive,
    "topology.link.latency_s": non_negative,
    "topology.link.sharing": _words("fair", "fifo"),
    "topology.link.scope": _words("source", "destination", "pair", "single", "both"),
    # words a scheduler checks when it is built, checked here before anything runs
    "scheduler.objective": _words("throughput", "max_min"),
    "scheduler.by": _words("service", "duration"),
    "scheduler.service": _words("gpu_s", "time_s"),
    "affinity": lambda key, v: _affinity(key, v),
}

def _affinity(key: str, table: Any) -> Any:
    """``affinity``: job class -> device type -> speed multiplier (> 0)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(key, f"must map job classes to {{device type: multiplier}}, got {table!r}")
    for cls, row in table.items():
        if not isinstance(row, Mapping):
            raise ConfigError(f"{key}.{cls}", f"must map device types to multipliers, got {row!r}")
        for dev, x in row.items():
            positive(f"{key}.{cls}.{dev}", x)
    return table


#: per service (``services.<name>.<key>``) in ``mode: mixed``
SERVICE_SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "replicas": _int(1),
    "arrival_s": non_negative,
    "mem_bytes_per_device": _int(0),
    "priority": _int(-INT64_MAX),
    "load_bw_bytes_s": positive,  # an autoscaled service's added replicas: weights load bandwidth
    "startup_s": non_negative,  # ...and fixed startup
    "provision_floor": flag,  # the service's own replicas provision when it starts too
}

#: bounds a key has wherever it appears (last part of the dotted key -> check)
KEY_RULES: dict[str, Callable[[str, Any], Any]] = {
    "load": positive,
    "rate_scale": positive,
    "arrival_rate_per_s": positive,
    "duration_median_s": positive,
    "reference_flops": _opt(positive),
    "gpu_memory_utilization": fraction,
    "elastic_fraction": probability,
    "mfu": fraction,
    "mbu": fraction,
    "time_factor": positive,
    "poll_s": positive,
    "round_s": _opt(positive),
    "max_jobs": _opt(_int(0)),
    "max_requests": _opt(_int(0)),
    "max_gpus": _opt(_int(1)),
    "max_nodes": _opt(_int(0)),
    "n_jobs": _int(0),
    "preprocess_s": non_negative,
    "output_s": non_negative,
    "start_offset_s": non_negative,
    "nodes": _int(1),
    "devices_per_node": _int(1),
    "cpus_per_node": _int(0),
    "host_mem_bytes_per_node": _int(0),
    "min_normalised": probability,
    "preemption": _words("recompute", "swap"),
    "missing_estimate": lambda key, v: v if v == "oracle" else non_negative(key, v),
}

#: last parts of keys whose numbers may be negative (everything else is a size, a time, a
#: rate or a count, so a negative value is a mistake)
SIGNED_KEYS = frozenset({"coef", "priority"})

#: the component groups a run builds (with ``_target_``), in the order they are checked
COMPONENTS = ("cluster", "workload", "scheduler", "placement", "memory", "backend", "batching", "router", "model",
              "gpu", "cost", "kv_memory", "serving", "calibration", "topology.prefill.router",
              "topology.prefill.batching", "topology.decode.router", "topology.decode.batching")

#: where the optional packages come from (module -> pip extra)
EXTRAS = {"torch": "torch", "hydra_plugins.hydra_joblib_launcher": "sweep",
          "hydra_plugins.hydra_ray_launcher": "ray", "hydra_plugins.hydra_submitit_launcher": "slurm"}


def install_hint(module: str) -> str:
    """``install the <extra> extra: pip install llmos_sim[<extra>]`` for an optional module."""
    for prefix, extra in EXTRAS.items():
        if module == prefix or module.startswith(prefix + ".") or prefix.startswith(module + "."):
            return f"install the {extra} extra: pip install llmos_sim[{extra}]"
    return f"install the package that provides {module!r}"


# -- the config check ----------------------------------------------------------------------
def check_config(cfg: Any) -> None:
    """Check a composed config (see the module docstring); raise :class:`ConfigError` naming
    the first bad key. Returns nothing: the config is not changed."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, DictConfig):
        try:
            data = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            raise ConfigError(str(key), f"cannot resolve: {getattr(e, 'msg', e)}") from None
    else:
        data = dict(cfg)
    data.pop("hydra", None)
    _check_numbers(data, "")
    for key, check in SCHEMA.items():
        node = _get(data, key)
        if node is not _MISSING:
            check(key, node)
    for group in CLOSED_GROUPS:  # the engine reads only its own keys: a typo would be ignored
        node = data.get(group)
        if isinstance(node, Mapping):
            for k in node:
                if f"{group}.{k}" not in SCHEMA:
                    known = sorted(x.split(".", 1)[1] for x in SCHEMA if x.startswith(group + "."))
                    raise ConfigError(f"{group}.{k}", f"unknown key (known: {', '.join(known)})")
    for name, svc in (data.get("services") or {}).items():
        if isinstance(svc, Mapping):
            for k, check in SERVICE_SCHEMA.items():
                if k in svc:
                    check(f"services.{name}.{k}", svc[k])
            if "workload" in svc:
                _check_component(f"services.{name}.workload", svc["workload"], need="requests")
            if svc.get("autoscaler") is not None:
                _check_component(f"services.{name}.autoscaler", svc["autoscaler"])
            if isinstance(svc.get("topology"), Mapping):  # its own topology (in place of the run's)
                for key, check in SCHEMA.items():
                    node = _get({"topology": svc["topology"]}, key) if key.startswith("topology.") else _MISSING
                    if node is not _MISSING:
                        check(f"services.{name}.{key}", node)
    if isinstance(data.get("serving"), Mapping):  # every serving key is set once, in its yaml
        from llmos_sim.serving.spec import ServingSpec

        ServingSpec.check_keys(data["serving"])
    mode = data.get("mode", "training")
    for key in COMPONENTS:
        node = _get(data, key)
        if node is _MISSING or node is None:
            continue
        if key == "calibration" and mode != "calibrate":
            continue
        need = None
        if key == "workload":
            need = "requests" if mode == "serving" else "jobs" if mode in ("training", "mixed") else None
        _check_component(key, node, need=need)


_MISSING = object()


def _get(data: Mapping, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _check_numbers(node: Any, key: str) -> None:
    """Rule 1 and :data:`KEY_RULES` over the whole tree."""
    last = key.rsplit(".", 1)[-1]
    if isinstance(node, Mapping):
        for k, v in node.items():
            _check_numbers(v, f"{key}.{k}" if key else str(k))
        return
    if last in KEY_RULES and not isinstance(node, Mapping):
        KEY_RULES[last](key, node)
    if isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _check_numbers(v, f"{key}[{i}]")
        return
    if _is_number(node):
        v = finite(key, node)
        base = last.split("[", 1)[0]
        if v < 0 and base not in SIGNED_KEYS:
            raise ConfigError(key, f"must be >= 0, got {node!r}")


def locate(key: str, target: str) -> Any:
    """Import a ``_target_`` as Hydra does; a missing optional package names its extra."""
    from hydra._internal.utils import _locate

    try:
        return _locate(target)
    except Exception as e:  # noqa: BLE001 - every failure is reported with the key
        missing = next((c.name for c in chain(e) if isinstance(c, ModuleNotFoundError) and c.name), None)
        if missing and not missing.startswith("llmos_sim"):
            raise ConfigError(key, f"{target} needs {missing!r}, which is not installed: "
                                   f"{install_hint(missing)}") from None
        raise ConfigError(key, f"_target_ {target!r} cannot be imported") from None


def chain(exc: BaseException | None):
    """``exc`` and its causes / contexts, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _check_component(key: str, node: Any, need: str | None = None) -> None:
    """Rule 3: the node names a class, and its keys are that class's parameters."""
    if not isinstance(node, Mapping):
        raise ConfigError(key, f"must be a config group with a _target_, got {node!r}")
    target = node.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(key, "has no _target_ (the class or function to build); every config group "
                               "file names one, e.g. _target_: llmos_sim.workload.SyntheticJobs")
    obj = locate(key, target)
    if need is not None and inspect.isclass(obj) and not hasattr(obj, need):
        kind = "request" if need == "requests" else "job"
        raise ConfigError(key, f"{target} is not a {kind} workload (it has no {need}() method); this mode needs one")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # noqa: BLE001 - annotations we cannot evaluate are simply not checked
        hints = {}
    for k, v in node.items():
        if str(k).startswith("_"):
            continue
        sub = f"{key}.{k}"
        if k not in params:
            if takes_any:
                continue
            names = [p for p in params if params[p].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                 inspect.Parameter.VAR_KEYWORD)]
            raise ConfigError(sub, f"{target.rsplit('.', 1)[-1]} has no parameter {k!r} (it takes {names}); "
                                   f"if an experiment set it for another option, drop it with ~{sub}")
        if isinstance(v, Mapping) and "_target_" in v:
            _check_component(sub, v)
            continue
        if k in hints:
            _check_type(sub, v, hints[k])


def _check_type(key: str, value: Any, hint: Any) -> None:
    """``value`` against a parameter annotation (only the simple types are checked)."""
    if not _matches(value, hint):
        raise ConfigError(key, f"must be {_describe(hint)}, got {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if origin is typing.Union or (origin is not None and type(hint).__name__ == "UnionType"):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        if not _is_number(value):
            return False
        return isinstance(value, numbers.Integral) or (math.isfinite(float(value)) and float(value) == int(value))
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str) or (_is_number(value) and isinstance(value, numbers.Integral))
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(_matches(v, inner) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            return False
        inner = args[1] if len(args) == 2 else Any
        return all(_matches(v, inner) for v in value.values())
    return True  # classes, callables, paths: the class checks those itself


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple, Sequence, typing.Sequence):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping, typing.Mapping):
        return f"a mapping to {_describe(args[1])}" if len(args) == 2 else "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a word"}.get(hint, str(hint))


# -- turning an exception into one line ---------------------------------------------------
def named_error(exc: BaseException) -> str | None:
    """The one-line message for a user's mistake, or ``None`` for anything else (a bug).

    An :class:`InputError` anywhere in the exception's chain is the message. A check a class
    made while Hydra built it (``InstantiationException`` caused by a ``ValueError`` or
    ``TypeError``) becomes ``config key '<key>': <what the class said>``."""
    for e in chain(exc):
        if isinstance(e, InputError):
            return str(e).replace("\n", " ")
    try:
        from hydra.errors import InstantiationException
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, (ValueError, TypeError)):
        text = str(exc)
        key = text.rsplit("full_key: ", 1)[-1].strip() if "full_key: " in text else "?"
        return f"config key {key!r}: {exc.__cause__}".replace("\n", " ")
    return None
