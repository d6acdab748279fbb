"""Wirings for the liquid networks: structure, seeding, round trips, bad arguments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tradezoo.policies.wiring import NCP, AutoNCP, FullyConnected, Wiring


def _roundtrip(wiring: Wiring) -> Wiring:
    return Wiring.from_config(json.loads(json.dumps(wiring.get_config())))


def test_fully_connected_structure() -> None:
    w = FullyConnected(6, output_dim=2, seed=3).build(4)
    assert w.adjacency_matrix.shape == (6, 6)
    assert w.sensory_adjacency_matrix is not None
    assert w.sensory_adjacency_matrix.shape == (4, 6)
    assert set(np.unique(w.adjacency_matrix)) <= {-1, 1}
    assert w.synapse_count == 36 and w.sensory_synapse_count == 24
    assert w.output_dim == 2 and FullyConnected(5).output_dim == 5
    no_self = FullyConnected(5, self_connections=False)
    assert (np.diag(no_self.adjacency_matrix) == 0).all()
    assert no_self.synapse_count == 20


def test_seeded_and_history_independent() -> None:
    a = AutoNCP(20, 4, seed=7).build(5)
    b = AutoNCP(20, 4, seed=7).build(5)
    c = AutoNCP(20, 4, seed=8).build(5)
    assert a == b
    assert a != c
    f1, f2 = FullyConnected(8, seed=1).build(3), FullyConnected(8, seed=1).build(3)
    assert f1 == f2
    assert f1 != FullyConnected(8, seed=2).build(3)


@pytest.mark.parametrize(
    "wiring",
    [
        FullyConnected(7, output_dim=3, seed=5, self_connections=False).build(4),
        FullyConnected(7),
        NCP(6, 4, 2, 3, 2, 5, 2, seed=9).build(5),
        AutoNCP(32, 8, sparsity_level=0.3, seed=4).build(16),
        AutoNCP(16, 4),
    ],
)
def test_config_round_trip_gives_equal_matrices(wiring: Wiring) -> None:
    back = _roundtrip(wiring)
    assert type(back) is type(wiring)
    assert back == wiring
    assert back.get_config() == wiring.get_config()


def test_base_wiring_round_trip_and_subclass_check() -> None:
    base = Wiring(3, 1, [[0, 1, -1], [1, 0, 0], [0, 0, 1]])
    base.build(2)
    base.sensory_adjacency_matrix = np.array([[1, 0, 0], [0, -1, 1]], dtype=np.int32)
    back = _roundtrip(base)
    assert type(back) is Wiring and back == base
    ncp_config = AutoNCP(16, 4).get_config()
    assert isinstance(AutoNCP.from_config(ncp_config), AutoNCP)
    with pytest.raises(ValueError, match="not a FullyConnected"):
        FullyConnected.from_config(ncp_config)
    with pytest.raises(ValueError, match="unknown wiring class 'Foo'"):
        Wiring.from_config({"class": "Foo", "units": 3})
    with pytest.raises(TypeError, match="must be a dict"):
        Wiring.from_config([1, 2])  # type: ignore[arg-type]


def test_ncp_layers_follow_the_circuit() -> None:
    w = NCP(inter_neurons=6, command_neurons=4, motor_neurons=2, sensory_fanout=3,
            inter_fanout=2, recurrent_command_synapses=5, motor_fanin=2, seed=1).build(5)
    motor, command, inter = (np.array(w.get_neurons_of_layer(i)) for i in (2, 1, 0))
    assert list(motor) == [0, 1] and list(command) == [2, 3, 4, 5]
    adj, sens = np.abs(w.adjacency_matrix), np.abs(w.sensory_adjacency_matrix)
    # Sensory synapses reach inter neurons only; every inter neuron is reached.
    assert sens[:, np.r_[motor, command]].sum() == 0
    assert (sens[:, inter].sum(0) >= 1).all()
    assert (sens[:, inter].sum(1) >= 3).all()  # fan-out per input feature
    allowed = np.zeros_like(adj)
    allowed[np.ix_(inter, command)] = 1
    allowed[np.ix_(command, command)] = 1
    allowed[np.ix_(command, motor)] = 1
    assert (adj * (1 - allowed)).sum() == 0  # nothing outside inter->command->motor
    assert (adj[np.ix_(inter, command)].sum(1) == 2).all()  # inter fan-out
    assert (adj[np.ix_(inter, command)].sum(0) >= 1).all()  # every command reached
    assert (adj[np.ix_(command, motor)].sum(0) >= 2).all()  # motor fan-in
    assert (adj[np.ix_(command, motor)].sum(1) >= 1).all()  # every command drives a motor
    assert 1 <= adj[np.ix_(command, command)].sum() <= 5
    assert w.get_type_of_neuron(0) == "motor" and w.get_type_of_neuron(11) == "inter"


def test_autoncp_sizes_follow_ncps_rules() -> None:
    w = AutoNCP(64, 16, sparsity_level=0.5)
    # rest = 48: command = int(0.4 * 48) = 19, inter = 29; fan-outs scale with density 0.5.
    assert (w.inter_neurons, w.command_neurons, w.motor_neurons) == (29, 19, 16)
    assert (w.sensory_fanout, w.inter_fanout, w.motor_fanin) == (14, 9, 9)
    assert w.recurrent_command_synapses == 19
    ncps = pytest.importorskip("ncps")
    ref = ncps.wirings.AutoNCP(64, 16, sparsity_level=0.5)
    assert (ref._num_inter_neurons, ref._num_command_neurons) == (29, 19)
    assert (ref._sensory_fanout, ref._inter_fanout, ref._motor_fanin) == (14, 9, 9)


def test_build_rules() -> None:
    w = FullyConnected(4)
    with pytest.raises(ValueError, match="not built"):
        _ = w.sensory_synapse_count
    w.build(3)
    before = w.sensory_adjacency_matrix.copy()
    w.build(3)  # idempotent
    assert np.array_equal(before, w.sensory_adjacency_matrix)
    with pytest.raises(ValueError, match="already built for input_dim=3"):
        w.build(5)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: FullyConnected(0), ValueError, "units must be >= 1"),
        (lambda: FullyConnected(True), TypeError, "units must be an integer"),
        (lambda: FullyConnected(4, output_dim=5), ValueError, r"output_dim must be in \[1, 4\]"),
        (lambda: FullyConnected(4, seed=-1), ValueError, "seed must be >= 0"),
        (lambda: FullyConnected(4, self_connections=1), TypeError, "self_connections"),
        (lambda: FullyConnected(4).build(0), ValueError, "input_dim must be >= 1"),
        (lambda: NCP(0, 4, 2, 1, 1, 1, 1), ValueError, "inter_neurons must be >= 1"),
        (lambda: NCP(3, 4, 2, 4, 1, 1, 1), ValueError, "sensory_fanout"),
        (lambda: NCP(3, 4, 2, 1, 5, 1, 1), ValueError, "inter_fanout"),
        (lambda: NCP(3, 4, 2, 1, 1, -1, 1), ValueError, "recurrent_command_synapses"),
        (lambda: NCP(3, 4, 2, 1, 1, 1, 5), ValueError, "motor_fanin"),
        (lambda: NCP(3, 4, 2, 1.5, 1, 1, 1), TypeError, "sensory_fanout"),
        (lambda: AutoNCP(10, 8), ValueError, "output_size"),
        (lambda: AutoNCP(3, 1), ValueError, "units must be >= 4"),
        (lambda: AutoNCP(10, 2, sparsity_level=1.0), ValueError, "sparsity_level"),
        (lambda: AutoNCP(10, 2, sparsity_level="x"), TypeError, "sparsity_level"),
        (lambda: Wiring(2, adjacency_matrix=[[0, 2], [0, 0]]), ValueError, "-1, 0 or"),
        (lambda: Wiring(2, adjacency_matrix=[[0, 1]]), ValueError, "shape"),
    ],
)
def test_bad_arguments(make, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()
