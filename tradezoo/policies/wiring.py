"""Sparse wirings for the liquid networks (``cfc``, ``ltc``): who may talk to whom.

A wiring is two integer matrices with entries in ``{-1, 0, +1}`` (synapse polarity; 0 = no
synapse):

    adjacency_matrix          [units, units]      row = source neuron, column = target neuron
    sensory_adjacency_matrix  [input_dim, units]  row = input feature, column = target neuron

``output_dim`` neurons are the outputs ("motor" neurons); they are always the FIRST
``output_dim`` neuron ids, so a model's output is ``state[:, :output_dim]``.

Wirings here:

- :class:`FullyConnected` every neuron to every neuron and every input to every neuron, with
  random polarity (one inhibitory in three, as ``ncps``).
- :class:`NCP` the Neural Circuit Policy of Lechner et al. 2020 ("Neural circuit policies
  enabling auditable autonomy", Nature Machine Intelligence 2, 642-652): four layers
  sensory -> inter -> command -> motor, with sparse random fan-outs/fan-ins, recurrent synapses
  inside the command layer only, and random polarity. Neuron ids are ordered
  ``[motor | command | inter]`` (as ``ncps``), so the motor neurons are the outputs.
- :class:`AutoNCP` an :class:`NCP` sized from ``(units, output_size, sparsity_level)`` with the
  same rules as ``ncps.wirings.AutoNCP``.

Differences from ``ncps.wirings`` (whose structure we follow):

- Randomness comes from ``numpy.random.default_rng`` seeded streams; the recurrent part is
  drawn in ``__init__`` from stream ``(seed, 0)`` and the sensory part in :meth:`build` from
  stream ``(seed, 1)``, so the matrices depend only on ``(arguments, seed, input_dim)``, never
  on call history. (Same structure as ``ncps``, different random draws.)
- ``get_config()`` / ``from_config()`` round-trip exactly (``ncps.NCP.get_config`` returns
  neuron-id lists and ``seed=None`` and cannot be fed back). Configs are JSON-friendly and
  carry a ``"class"`` key, so :meth:`Wiring.from_config` rebuilds any subclass.
- Arguments are validated (type and range) with errors that name the argument and the rule.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tradezoo.data.checks import check_bool, check_int, check_number

__all__ = ["NCP", "AutoNCP", "FullyConnected", "Wiring"]


def _polarity_matrix(name: str, matrix: Any, shape: tuple[int, int]) -> np.ndarray:
    """Validate and copy a polarity matrix (entries -1, 0, +1) of the given shape."""
    array = np.asarray(matrix)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if array.size and not np.isin(array, (-1, 0, 1)).all():
        raise ValueError(f"{name} entries must be -1, 0 or +1 (synapse polarity)")
    return array.astype(np.int32, copy=True)


class Wiring:
    """A wiring with explicit matrices; base class of the generated wirings.

    Args:
        units: number of neurons (the recurrent state size).
        output_dim: number of output (motor) neurons, the first ``output_dim`` ids;
            ``None`` means all ``units``.
        adjacency_matrix: optional ``[units, units]`` polarity matrix (default: no synapses).

    Attributes:
        units, output_dim, input_dim (``None`` until :meth:`build`), adjacency_matrix
        ``[units, units]`` int32, sensory_adjacency_matrix ``[input_dim, units]`` int32 or
        ``None`` before :meth:`build`.
    """

    #: Name -> class, for :meth:`from_config` (filled by ``__init_subclass__``).
    _classes: ClassVar[dict[str, type[Wiring]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Wiring._classes[cls.__name__] = cls

    def __init__(
        self, units: int, output_dim: int | None = None, adjacency_matrix: Any = None
    ) -> None:
        self.units = check_int("units", units, 1, rule=">= 1")
        self.output_dim = (
            self.units
            if output_dim is None
            else check_int("output_dim", output_dim, 1, self.units,
                           rule=f"in [1, {self.units}]")
        )
        self.adjacency_matrix = (
            np.zeros((self.units, self.units), dtype=np.int32)
            if adjacency_matrix is None
            else _polarity_matrix("adjacency_matrix", adjacency_matrix, (self.units, self.units))
        )
        self.input_dim: int | None = None
        self.sensory_adjacency_matrix: np.ndarray | None = None

    # -- building ---------------------------------------------------------------------------

    def is_built(self) -> bool:
        return self.input_dim is not None

    def build(self, input_dim: int) -> Wiring:
        """Fix the number of input features and draw the sensory synapses (idempotent).

        Raises ``ValueError`` if already built for a different ``input_dim``. Returns ``self``.
        """
        input_dim = check_int("input_dim", input_dim, 1, rule=">= 1")
        if self.input_dim is not None:
            if self.input_dim != input_dim:
                raise ValueError(
                    f"wiring already built for input_dim={self.input_dim}, "
                    f"cannot rebuild it for input_dim={input_dim}"
                )
            return self
        self.input_dim = input_dim
        self.sensory_adjacency_matrix = np.zeros((input_dim, self.units), dtype=np.int32)
        self._build_sensory()
        return self

    def _build_sensory(self) -> None:
        """Fill ``sensory_adjacency_matrix`` (subclasses; the base class leaves it empty)."""

    def _require_built(self) -> np.ndarray:
        if self.sensory_adjacency_matrix is None:
            raise ValueError(f"{type(self).__name__} is not built: call build(input_dim) first")
        return self.sensory_adjacency_matrix

    # -- structure --------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return 1

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        if layer_id != 0:
            raise ValueError(f"{type(self).__name__} has 1 layer, got layer_id={layer_id}")
        return list(range(self.units))

    def get_type_of_neuron(self, neuron_id: int) -> str:
        return "motor" if neuron_id < self.output_dim else "inter"

    @property
    def synapse_count(self) -> int:
        """Number of neuron -> neuron synapses."""
        return int(np.abs(self.adjacency_matrix).sum())

    @property
    def sensory_synapse_count(self) -> int:
        """Number of input -> neuron synapses."""
        return int(np.abs(self._require_built()).sum())

    def erev_initializer(self) -> np.ndarray:
        """Reversal-potential init ``[units, units]`` float32: the polarity (as ``ncps``)."""
        return self.adjacency_matrix.astype(np.float32)

    def sensory_erev_initializer(self) -> np.ndarray:
        """Sensory reversal-potential init ``[input_dim, units]`` float32: the polarity."""
        return self._require_built().astype(np.float32)

    # -- (de)serialisation -------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """JSON-friendly dict that :meth:`from_config` turns back into an equal wiring."""
        return {
            "class": "Wiring",
            "units": self.units,
            "output_dim": self.output_dim,
            "adjacency_matrix": self.adjacency_matrix.tolist(),
            "input_dim": self.input_dim,
            "sensory_adjacency_matrix": (
                None
                if self.sensory_adjacency_matrix is None
                else self.sensory_adjacency_matrix.tolist()
            ),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Wiring:
        """Rebuild a wiring from :meth:`get_config` output (any subclass via ``"class"``)."""
        if not isinstance(config, dict):
            raise TypeError(f"wiring config must be a dict, got {type(config).__name__}")
        config = dict(config)
        name = config.pop("class", cls.__name__)
        if name == "Wiring":
            target: type[Wiring] = Wiring
        elif name in Wiring._classes:
            target = Wiring._classes[name]
        else:
            raise ValueError(
                f"unknown wiring class {name!r} in config; valid: {['Wiring', *Wiring._classes]}"
            )
        if cls is not Wiring and not issubclass(target, cls):
            raise ValueError(f"config describes a {name}, not a {cls.__name__}")
        return target._from_config(config)

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> Wiring:
        input_dim = config.pop("input_dim", None)
        sensory = config.pop("sensory_adjacency_matrix", None)
        wiring = cls(**config)
        if input_dim is not None:
            if cls is Wiring:
                wiring.input_dim = check_int("input_dim", input_dim, 1, rule=">= 1")
                wiring.sensory_adjacency_matrix = (
                    np.zeros((wiring.input_dim, wiring.units), dtype=np.int32)
                    if sensory is None
                    else _polarity_matrix(
                        "sensory_adjacency_matrix", sensory, (wiring.input_dim, wiring.units)
                    )
                )
            else:
                wiring.build(input_dim)
        return wiring

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wiring):
            return NotImplemented
        same_sensory = (
            self.sensory_adjacency_matrix is None and other.sensory_adjacency_matrix is None
        ) or (
            self.sensory_adjacency_matrix is not None
            and other.sensory_adjacency_matrix is not None
            and np.array_equal(self.sensory_adjacency_matrix, other.sensory_adjacency_matrix)
        )
        return (
            self.units == other.units
            and self.output_dim == other.output_dim
            and np.array_equal(self.adjacency_matrix, other.adjacency_matrix)
            and same_sensory
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (build) and compared by value

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(units={self.units}, output_dim={self.output_dim}, "
            f"input_dim={self.input_dim})"
        )


class FullyConnected(Wiring):
    """All-to-all wiring; polarity ``-1`` with probability 1/3 (as ``ncps``).

    Args:
        units: number of neurons.
        output_dim: output neurons (first ids); ``None`` = ``units``.
        seed: seed of the polarity draws.
        self_connections: include ``i -> i`` synapses.
    """

    def __init__(
        self,
        units: int,
        output_dim: int | None = None,
        seed: int = 1111,
        self_connections: bool = True,
    ) -> None:
        super().__init__(units, output_dim)
        self.seed = check_int("seed", seed, 0, rule=">= 0")
        self.self_connections = check_bool("self_connections", self_connections)
        rng = np.random.default_rng((self.seed, 0))
        polarity = rng.choice(np.array([-1, 1, 1], dtype=np.int32), size=(units, units))
        if not self_connections:
            np.fill_diagonal(polarity, 0)
        self.adjacency_matrix = polarity.astype(np.int32)

    def _build_sensory(self) -> None:
        assert self.input_dim is not None
        rng = np.random.default_rng((self.seed, 1))
        self.sensory_adjacency_matrix = rng.choice(
            np.array([-1, 1, 1], dtype=np.int32), size=(self.input_dim, self.units)
        ).astype(np.int32)

    def get_config(self) -> dict[str, Any]:
        return {
            "class": "FullyConnected",
            "units": self.units,
            "output_dim": self.output_dim,
            "seed": self.seed,
            "self_connections": self.self_connections,
            "input_dim": self.input_dim,
        }


class NCP(Wiring):
    """Neural Circuit Policy wiring (Lechner et al. 2020), structure as ``ncps.wirings.NCP``.

    Layers and synapses (each synapse gets polarity ``-1`` or ``+1`` with probability 1/2):

    - sensory -> inter: every input feature feeds ``sensory_fanout`` distinct inter neurons;
      inter neurons left without input get ``max(1, F * sensory_fanout // inter)`` inputs.
    - inter -> command: every inter neuron feeds ``inter_fanout`` distinct command neurons;
      unreached command neurons get ``max(1, inter * inter_fanout // command)`` inter inputs.
    - command -> command: ``recurrent_command_synapses`` random (source, target) draws.
    - command -> motor: every motor neuron reads ``motor_fanin`` distinct command neurons;
      command neurons without a motor target feed ``max(1, motor * motor_fanin // command)``.

    Args:
        inter_neurons, command_neurons, motor_neurons: layer sizes (>= 1 each); ``units`` is
            their sum and ``output_dim = motor_neurons``.
        sensory_fanout: in ``[1, inter_neurons]``.
        inter_fanout: in ``[1, command_neurons]``.
        recurrent_command_synapses: ``>= 0``.
        motor_fanin: in ``[1, command_neurons]``.
        seed: seed of all draws.
    """

    def __init__(
        self,
        inter_neurons: int,
        command_neurons: int,
        motor_neurons: int,
        sensory_fanout: int,
        inter_fanout: int,
        recurrent_command_synapses: int,
        motor_fanin: int,
        seed: int = 22222,
    ) -> None:
        n_inter = check_int("inter_neurons", inter_neurons, 1, rule=">= 1")
        n_command = check_int("command_neurons", command_neurons, 1, rule=">= 1")
        n_motor = check_int("motor_neurons", motor_neurons, 1, rule=">= 1")
        super().__init__(n_inter + n_command + n_motor, n_motor)
        self.inter_neurons = n_inter
        self.command_neurons = n_command
        self.motor_neurons = n_motor
        self.sensory_fanout = check_int("sensory_fanout (at most inter_neurons)", sensory_fanout,
                                        1, n_inter, rule=f"in [1, {n_inter}]")
        self.inter_fanout = check_int("inter_fanout (at most command_neurons)", inter_fanout, 1,
                                      n_command, rule=f"in [1, {n_command}]")
        self.recurrent_command_synapses = check_int(
            "recurrent_command_synapses", recurrent_command_synapses, 0, rule=">= 0")
        self.motor_fanin = check_int("motor_fanin (at most command_neurons)", motor_fanin, 1,
                                     n_command, rule=f"in [1, {n_command}]")
        self.seed = check_int("seed", seed, 0, rule=">= 0")
        # Neuron ids: [0, motor) motor | [motor, motor + command) command | rest inter.
        self._motor_ids = np.arange(0, n_motor)
        self._command_ids = np.arange(n_motor, n_motor + n_command)
        self._inter_ids = np.arange(n_motor + n_command, self.units)
        rng = np.random.default_rng((self.seed, 0))
        self._build_inter_to_command(rng)
        self._build_recurrent_command(rng)
        self._build_command_to_motor(rng)

    @staticmethod
    def _sign(rng: np.random.Generator) -> int:
        return int(rng.choice((-1, 1)))

    def _build_inter_to_command(self, rng: np.random.Generator) -> None:
        reached: set[int] = set()
        for src in self._inter_ids:
            for dest in rng.choice(self._command_ids, size=self.inter_fanout, replace=False):
                reached.add(int(dest))
                self.adjacency_matrix[src, dest] = self._sign(rng)
        fanin = int(np.clip(self.inter_neurons * self.inter_fanout // self.command_neurons,
                            1, self.inter_neurons))
        for dest in self._command_ids:
            if int(dest) in reached:
                continue
            for src in rng.choice(self._inter_ids, size=fanin, replace=False):
                self.adjacency_matrix[src, dest] = self._sign(rng)

    def _build_recurrent_command(self, rng: np.random.Generator) -> None:
        for _ in range(self.recurrent_command_synapses):
            src = rng.choice(self._command_ids)
            dest = rng.choice(self._command_ids)
            self.adjacency_matrix[src, dest] = self._sign(rng)

    def _build_command_to_motor(self, rng: np.random.Generator) -> None:
        reached: set[int] = set()
        for dest in self._motor_ids:
            for src in rng.choice(self._command_ids, size=self.motor_fanin, replace=False):
                reached.add(int(src))
                self.adjacency_matrix[src, dest] = self._sign(rng)
        fanout = int(np.clip(self.motor_neurons * self.motor_fanin // self.command_neurons,
                             1, self.motor_neurons))
        for src in self._command_ids:
            if int(src) in reached:
                continue
            for dest in rng.choice(self._motor_ids, size=fanout, replace=False):
                self.adjacency_matrix[src, dest] = self._sign(rng)

    def _build_sensory(self) -> None:
        assert self.input_dim is not None and self.sensory_adjacency_matrix is not None
        rng = np.random.default_rng((self.seed, 1))
        reached: set[int] = set()
        for src in range(self.input_dim):
            for dest in rng.choice(self._inter_ids, size=self.sensory_fanout, replace=False):
                reached.add(int(dest))
                self.sensory_adjacency_matrix[src, dest] = self._sign(rng)
        fanin = int(np.clip(self.input_dim * self.sensory_fanout // self.inter_neurons,
                            1, self.input_dim))
        for dest in self._inter_ids:
            if int(dest) in reached:
                continue
            for src in rng.choice(self.input_dim, size=fanin, replace=False):
                self.sensory_adjacency_matrix[src, dest] = self._sign(rng)

    @property
    def num_layers(self) -> int:
        return 3

    def get_neurons_of_layer(self, layer_id: int) -> list[int]:
        """Layer 0 = inter, 1 = command, 2 = motor (processing order)."""
        layers = (self._inter_ids, self._command_ids, self._motor_ids)
        if layer_id not in (0, 1, 2):
            raise ValueError(f"NCP has layers 0 (inter), 1 (command), 2 (motor); got {layer_id}")
        return [int(i) for i in layers[layer_id]]

    def get_type_of_neuron(self, neuron_id: int) -> str:
        if neuron_id < self.motor_neurons:
            return "motor"
        if neuron_id < self.motor_neurons + self.command_neurons:
            return "command"
        return "inter"

    def get_config(self) -> dict[str, Any]:
        return {
            "class": "NCP",
            "inter_neurons": self.inter_neurons,
            "command_neurons": self.command_neurons,
            "motor_neurons": self.motor_neurons,
            "sensory_fanout": self.sensory_fanout,
            "inter_fanout": self.inter_fanout,
            "recurrent_command_synapses": self.recurrent_command_synapses,
            "motor_fanin": self.motor_fanin,
            "seed": self.seed,
            "input_dim": self.input_dim,
        }


class AutoNCP(NCP):
    """:class:`NCP` sized automatically (rules of ``ncps.wirings.AutoNCP``).

    With ``density = 1 - sparsity_level`` and ``rest = units - output_size``:
    ``command = max(int(0.4 * rest), 1)``, ``inter = rest - command``,
    ``sensory_fanout = max(int(inter * density), 1)``,
    ``inter_fanout = max(int(command * density), 1)``,
    ``recurrent_command_synapses = max(int(command * density * 2), 1)``,
    ``motor_fanin = max(int(command * density), 1)``.

    Args:
        units: total neurons (>= 4); ``output_size`` must be ``<= units - 3`` (the rule of
            ``ncps``: at least three inter + command neurons remain).
        output_size: motor neurons (outputs).
        sparsity_level: in ``[0, 1)``; 0 = dense layer-to-layer connections.
        seed: seed of all draws.
    """

    def __init__(
        self, units: int, output_size: int, sparsity_level: float = 0.5, seed: int = 22222
    ) -> None:
        units = check_int("units", units, 4, rule=">= 4")
        output_size = check_int("output_size (at most units - 3)", output_size, 1, units - 3,
                                rule=f"in [1, {units - 3}]")
        sparsity_level = check_number("sparsity_level", sparsity_level, 0.0, 1.0,
                                      open_high=True, rule="in [0, 1)")
        self.output_size = output_size
        self.sparsity_level = float(sparsity_level)
        density = 1.0 - self.sparsity_level
        rest = units - output_size
        command = max(int(0.4 * rest), 1)
        inter = rest - command
        super().__init__(
            inter_neurons=inter,
            command_neurons=command,
            motor_neurons=output_size,
            sensory_fanout=max(int(inter * density), 1),
            inter_fanout=max(int(command * density), 1),
            recurrent_command_synapses=max(int(command * density * 2), 1),
            motor_fanin=max(int(command * density), 1),
            seed=seed,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "class": "AutoNCP",
            "units": self.units,
            "output_size": self.output_size,
            "sparsity_level": self.sparsity_level,
            "seed": self.seed,
            "input_dim": self.input_dim,
        }
