"""The adaptation methods and the reference rows of the results table: one registry.

A method is one ``Method`` (``redraw.methods.base``): what it calibrates on the target data
(``trainable``, ``loss``), how its policy stage starts (a fresh actor-critic or the pretrained one;
the DRAW or RSSM pretraining), which policy evaluate@ runs where, and its name in the reports. Its
behaviour lives in its own module (``draw_finetune``, ``dreamer_finetune``, ``redraw``,
``redraw_pessimistic``); ``register`` adds it to ``REGISTRY``, whose order is the results table's.
The calibration (``redraw.agent.adapt.Calibrator``), the stages, dvc.yaml's foreach lists
(tests/test_methods.py checks them), the records and the report read the registry
(docs/method.md#adding-an-adaptation-method).
"""

from __future__ import annotations

from redraw.methods import draw_finetune, dreamer_finetune, redraw, redraw_pessimistic
from redraw.methods.base import Method, Trainable

__all__ = ["Method", "Trainable", "REGISTRY", "register", "unregister", "get", "names", "calibrated", "evaluated",
           "transfer", "references", "baselines", "comparison_order"]

REGISTRY: dict[str, Method] = {}  #: name -> method, in the results table's order


def register(method: Method, before: str | None = None) -> Method:
    """Add ``method`` to the registry, last or just before method ``before`` (e.g. ``"oracle"``, to
    keep the references at the table's end); refused if its name is taken."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is registered already")
    rows = list(REGISTRY.items())
    at = len(rows) if before is None else list(REGISTRY).index(get(before).name)
    rows.insert(at, (method.name, method))
    REGISTRY.clear()  # the same dict: whoever holds it sees the new row
    REGISTRY.update(rows)
    return method


def unregister(name: str) -> Method:
    """Take method ``name`` out of the registry (a test's toy method)."""
    get(name)
    return REGISTRY.pop(name)


def get(name: str, among: tuple[str, ...] | None = None) -> Method:
    """The registered method ``name`` (one of ``among``, if given), else a ValueError naming the choices."""
    allowed = tuple(REGISTRY) if among is None else among
    if name not in allowed or name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(allowed)}")
    return REGISTRY[name]


def names(keep=lambda m: True) -> tuple[str, ...]:
    """The registered methods that ``keep`` accepts, in the registry's order."""
    return tuple(m.name for m in REGISTRY.values() if keep(m))


def calibrated() -> tuple[str, ...]:
    """The methods that calibrate on the target data and train a policy (calibrate@, train_policy@)."""
    return names(lambda m: m.calibrated)


def evaluated() -> tuple[str, ...]:
    """Every row of the results table (evaluate@): the methods and the references."""
    return names()


def transfer() -> tuple[str, ...]:
    """The adaptation methods (no references)."""
    return names(lambda m: m.role != "reference")


def references() -> tuple[str, ...]:
    """The reference rows (``source``, the ``oracle``), not transfer methods."""
    return names(lambda m: m.role == "reference")


def baselines() -> tuple[str, ...]:
    """The paper's baselines, whom ReDRAW must beat."""
    return names(lambda m: m.role == "baseline" and m.paper)


def comparison_order() -> tuple[str, ...]:
    """The adaptation methods as the reports compare them: ReDRAW and its variants first, then the
    baselines that calibrate, then those that do not."""
    return (*names(lambda m: m.role == "redraw"), *names(lambda m: m.role == "baseline" and m.calibrated),
            *names(lambda m: m.role == "baseline" and not m.calibrated))


# the results table's rows, in its order; each method's behaviour is in its module
register(Method("source", role="reference", policy="models/pretrain/agent.pt", env="env.source"))
register(Method("no_adapt", policy="models/pretrain/agent.pt"))
register(draw_finetune.DRAW_FINETUNE)
register(dreamer_finetune.DREAMER_FINETUNE)
register(redraw.REDRAW)
register(redraw_pessimistic.REDRAW_PESSIMISTIC)
register(Method("oracle", role="reference", label="expert (oracle)", training="oracle",
                policy="models/oracle/agent.pt"))
