"""CUDA graphs for inference (models/cuda_graphs.py): what runs without a GPU.

Recording and replaying need a GPU: tests/test_cuda.py checks that replayed ESTM and Joint
windows equal the eager ones and the official fixture.
"""

import pytest
import torch

import benchmark
from models.depthnet import DepthNetHybrid
from models.cuda_graphs import GraphedCall, flatten, graph_inference, unflatten
from models.inference import prepare_for_inference
from models.memory import ESTMemory
from utils.config import load_config


def _memory(n: int) -> ESTMemory:
    return ESTMemory([torch.rand(1, 2, 3) for _ in range(n)],
                     [torch.rand(1, 2, 3) for _ in range(n)], [torch.eye(4)[None]] * n)


def test_flatten_and_unflatten_round_trip_the_decode_arguments():
    args = ([torch.rand(1, 4, 8, 8)] * 3, [torch.rand(1, 2, 4, 4), torch.rand(1, 3, 2, 2)],
            torch.eye(4)[None, None], {("depth", 0, 0): torch.rand(1, 1, 8, 8), "n": 3},
            _memory(2), None, 0.5)
    leaves = []
    spec = flatten(args, leaves)
    assert len(leaves) == 3 + 2 + 1 + 1 + 6
    rebuilt = unflatten(spec, iter(leaves))
    assert isinstance(rebuilt, tuple) and isinstance(rebuilt[4], ESTMemory)
    assert rebuilt[3]["n"] == 3 and rebuilt[5] is None and rebuilt[6] == 0.5
    assert rebuilt[4].keys_bcdhw[1] is args[4].keys_bcdhw[1]
    assert rebuilt[3][("depth", 0, 0)] is args[3][("depth", 0, 0)]
    hash(spec)


def test_the_signature_tells_apart_what_a_graph_cannot_replay():
    def signature(*args):
        return flatten(args, [])

    base = signature(torch.rand(1, 4, 8, 8), _memory(2))
    assert signature(torch.rand(1, 4, 8, 8), _memory(2)) == base  # new values, same graph
    assert signature(torch.rand(1, 4, 8, 16), _memory(2)) != base  # shape
    assert signature(torch.rand(1, 4, 8, 8).double(), _memory(2)) != base  # dtype
    assert signature(torch.rand(1, 4, 8, 8), _memory(1)) != base  # memory still filling up
    assert signature(torch.rand(1, 4, 8, 8).transpose(2, 3), _memory(2)) != base  # layout
    with pytest.raises(TypeError, match="cannot record a set"):
        signature({1, 2})


def test_cuda_graphs_refuse_a_model_or_tensors_off_the_gpu():
    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18).eval()
    with pytest.raises(ValueError, match="--cuda_graphs needs the model on a CUDA device"):
        prepare_for_inference(model, fold_bn=True, cuda_graphs=True)
    with pytest.raises(ValueError, match="is for inference"):
        graph_inference(model.train())
    with pytest.raises(ValueError, match="must be on a CUDA device.*cpu"):
        GraphedCall(lambda x: x, "identity")(torch.rand(2))


def test_cuda_graphs_are_an_option_of_evaluation_and_benchmark():
    assert load_config("eval", []).cuda_graphs is False
    assert load_config("eval", ["--cuda_graphs", "True"]).cuda_graphs is True
    assert load_config("benchmark", ["--cuda_graphs", "true"]).cuda_graphs is True
    with pytest.raises(ValueError, match="needs --fast true"):
        benchmark.main(["--device", "cpu", "--cuda_graphs", "true", "--fast", "false"])
