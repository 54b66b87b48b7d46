"""DepthNetHybrid: the full ESTDepth model with the official interface and parameter names."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from models import factory, precision
from models.context_encoder import ResnetEncoder
from models.cost_volume import build_cost_volume, build_cost_volume_projected, split_pair_conv
from models.hybrid_decoder import DepthHybridDecoder
from models.layers import GroupNorm, conv_bn_3d, conv_bn_relu_3d
from models.losses import multiscale_depth_loss
from models.matching_feature import FEATURE_CHANNELS, MatchingFeatureNet
from models.memory import ESTMemory
from utils.geometry import COORD_DTYPE, relative_pose, scale_intrinsics
from utils.options import MIN_SIZE, MIN_WINDOW_FRAMES, SIZE_MULTIPLE, ModelOptions

MATCHING_STRIDE = 4  # the matching and cost volumes live at 1/4 resolution
# The parts torch.compile wraps (--compile): what runs per frame or per window.
COMPILED_PARTS = ("matchingFeature", "semanticFeature", "CostRegNet", "pre0", "pre1", "pre2")
# torch.compile modes --compile_mode offers ("reduce-overhead" replays CUDA graphs).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")

_DEFAULTS = ModelOptions()  # the constructor's defaults are the options' defaults


class DepthNetHybrid(nn.Module):
    """Hybrid (context + plane-sweep matching) depth network with the EST transformer.

    Args:
        ndepths: number of fronto-parallel depth planes (>= 2).
        depth_min, depth_max: range of the planes, in metres.
        resnet: depth of the ResNet context encoder (18, 34, 50, 101, 152).
        IF_EST_transformer: build and use the EST transformer.
        pretrained_resnet: optional local file of torchvision ImageNet weights.
    """

    def __init__(self, ndepths: int = _DEFAULTS.ndepths, depth_min: float = _DEFAULTS.depth_min,
                 depth_max: float = _DEFAULTS.depth_max, resnet: int = _DEFAULTS.resnet,
                 IF_EST_transformer: bool = _DEFAULTS.IF_EST_transformer,
                 pretrained_resnet: str | None = None):
        super().__init__()
        if ndepths < 2:
            raise ValueError(f"ndepths must be at least 2, got {ndepths}")
        if not 0 < depth_min < depth_max:
            raise ValueError(f"need 0 < depth_min < depth_max, got {depth_min}, {depth_max}")
        self.ndepths, self.depth_min, self.depth_max = ndepths, depth_min, depth_max
        self.depth_interval = (depth_max - depth_min) / (ndepths - 1)
        self.IF_EST_transformer = IF_EST_transformer
        # Autocast dtype the model applies itself (None: float32, or the caller's autocast);
        # models/precision.py says which parts stay float32.
        self.amp_dtype = None
        # The same numbers with less work (use_fast_layers); off: the official layer order.
        self.fast_layers = False
        self.compile_mode = None  # compile_parts' mode once compiled
        self.register_buffer("depth_cands", depth_min + self.depth_interval * torch.arange(
            ndepths, dtype=torch.float32), persistent=False)

        self.matchingFeature = MatchingFeatureNet()
        self.semanticFeature = ResnetEncoder(resnet, pretrained_resnet)
        self.CostRegNet = DepthHybridDecoder(self.semanticFeature.num_ch_enc, ndepths=ndepths,
                                             depth_max=depth_max,
                                             IF_EST_transformer=IF_EST_transformer)
        c = FEATURE_CHANNELS
        self.pre0 = conv_bn_3d(2 * c, c, 1, 1, 0)
        self.pre1 = conv_bn_relu_3d(c, c, 3, 1, 1)
        self.pre2 = conv_bn_3d(c, c, 3, 1, 1)

    @classmethod
    def from_options(cls, opts, state=None, source: str = "checkpoint") -> "DepthNetHybrid":
        """The model of ``opts`` (utils.options.ModelOptions), with the weights ``state``
        loaded strictly when given; see models/factory.py."""
        return factory.from_options(cls, opts, state, source)

    def use_fast_layers(self, on: bool = True) -> "DepthNetHybrid":
        """Compute the same numbers (up to float rounding, from the same parameters) with less
        work, in training and inference: the cost volume's pair convolution before the warp
        (:func:`models.cost_volume.build_cost_volume_projected`), ``dres2`` -> key, value
        without 33-channel convolutions (``DepthHybridDecoder.key_value``) and, on a GPU, the
        EST ConvGRU's group norms from parallel statistics (:class:`models.layers.GroupNorm`).
        Off, the model runs the official layer order (what ``benchmark.py --fast false``
        times). The trainer and the inference copies (models/inference.py) turn it on."""
        self.fast_layers = on
        self.CostRegNet.split_key_value = on
        for module in self.modules():
            if isinstance(module, GroupNorm):
                module.parallel_statistics = on
        return self

    def compile_parts(self, backend: str = "inductor", mode: str = "default",
                      parts: tuple = COMPILED_PARTS) -> None:
        """``torch.compile`` the :data:`COMPILED_PARTS` in place, for inference or training
        (parameter names, hence checkpoints, are unchanged); ``mode`` is one of
        :data:`COMPILE_MODES` (inductor's); ``parts``, some of them (to find which part's
        compiled code changes a result)."""
        if not hasattr(torch, "compile"):
            raise RuntimeError("--compile needs torch.compile (PyTorch >= 2.0)")
        check_compile_mode(mode)
        check_compiled_parts(parts)
        kwargs = {} if mode == "default" else {"mode": mode}
        for name in parts:
            getattr(self, name).compile(backend=backend, dynamic=False, **kwargs)
        self.compile_mode = mode

    def begin_step(self) -> None:
        """Call before each training step: with ``compile_parts(mode="reduce-overhead")``
        this tells torch.compile's CUDA graphs that the previous step's outputs are no longer
        read, so that its graphs replay over their memory (a no-op otherwise)."""
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def parameters_without_gradient(self, num_frames: int) -> list[str]:
        """Names of the trainable parameters that a training forward of ``num_frames``-frame
        windows can never give a gradient.

        ``key_layer`` feeds only the EST attention between targets (training runs without
        memory): without the transformer, or with a single target (``num_frames == 3``), no
        key is ever attended to. Everything else that requires a gradient gets one
        (tests/test_model.py checks this list against a backward pass).
        """
        attends = self.IF_EST_transformer and num_frames - 2 > 1
        if attends:
            return []
        return [name for name, p in self.named_parameters()
                if p.requires_grad and name.startswith("CostRegNet.key_layer.")]

    def fuse_pair(self, pair_ncdhw: torch.Tensor) -> torch.Tensor:
        """Learned fusion of one (reference, warped source) feature pair."""
        return precision.run("cost_fusion", self._fuse_pair, pair_ncdhw)

    def _fuse_pair(self, pair_ncdhw: torch.Tensor) -> torch.Tensor:
        return self._finish_pair(self.pre0[0](pair_ncdhw))

    def _finish_pair(self, x_ncdhw: torch.Tensor) -> torch.Tensor:
        """The fusion after ``pre0``'s convolution: its batch norm, then ``pre1``/``pre2``."""
        x = self.pre0[1](x_ncdhw)
        return x + self.pre2(self.pre1(x))

    def _projected_fusion(self) -> tuple:
        """``(project_ref, project_src, finish)`` of the fusion for
        :func:`models.cost_volume.build_cost_volume_projected`, in its precision region."""
        conv = self.pre0[0]
        w_ref, w_src = split_pair_conv(conv.weight)
        run = lambda fn, *a: precision.run("cost_fusion", fn, *a)  # noqa: E731
        return (lambda x: run(F.conv2d, x, w_ref, conv.bias),
                lambda x: run(F.conv2d, x, w_src),
                lambda x: run(self._finish_pair, x))

    def cost_volume(self, matching: list, i: int, world_T_cam_bn44: torch.Tensor,
                    K_b33: torch.Tensor, depth_planes_bd: torch.Tensor) -> torch.Tensor:
        """The ``[B, 32, D, H/4, W/4]`` cost volume of frame ``i`` against ``i - 1``, ``i + 1``.

        With ``fast_layers`` the fusion's first convolution runs before the warp: the same
        volume up to rounding, with less work
        (:func:`models.cost_volume.build_cost_volume_projected`).
        """
        sources = (i - 1, i + 1)
        poses = [relative_pose(world_T_cam_bn44[:, i], world_T_cam_bn44[:, s]) for s in sources]
        exact = [relative_pose(world_T_cam_bn44[:, i].to(COORD_DTYPE),
                               world_T_cam_bn44[:, s].to(COORD_DTYPE)) for s in sources]
        srcs = [matching[s] for s in sources]
        if not self.fast_layers:
            return build_cost_volume(matching[i], srcs, poses, K_b33, depth_planes_bd,
                                     self.fuse_pair, exact)
        return build_cost_volume_projected(matching[i], srcs, poses, K_b33, depth_planes_bd,
                                           *self._projected_fusion(), exact)

    def predict(self, imgs, world_T_cam_bn44, cam_intr, memory: Optional[ESTMemory] = None,
                use_est=None, inputs_checked: bool = False):
        """Depths of the inner frames of a window.

        Args:
            imgs: ``[B, N, 3, H, W]`` RGB in 0..255, N >= 3; targets are frames 1..N-2.
            world_T_cam_bn44: ``[B, N, 4, 4]`` camera-to-world.
            cam_intr: ``[B, 3, 3]`` intrinsics at H x W.
            memory: views of earlier windows, or None.
            use_est: run the EST transformer; default: when built and given memory.
            inputs_checked: the caller ran :func:`check_inputs` on the host copies (its
                finiteness test on device tensors would make the host wait for the device).
        Returns:
            (outputs with the official keys, the memory this window hands on).
        """
        if not inputs_checked:
            check_inputs(imgs, world_T_cam_bn44, cam_intr)
        b, n = imgs.shape[:2]
        with precision.autocast(imgs.device.type, self.amp_dtype):
            imgs = normalize_images(imgs)
            if self.training:
                matching = list(precision.run("matching", self.matchingFeature,
                                              imgs.flatten(0, 1)).unflatten(0, (b, n)).unbind(1))
                context_feats = precision.run("context", self.semanticFeature,
                                              imgs[:, 1:n - 1].flatten(0, 1))
            else:
                # One frame at a time: convolution libraries choose kernels by batch size, so
                # a frame's features would otherwise change in the last bits with the batch
                # they were computed in; this way the evaluation's per-frame feature cache
                # (evaluation.inference_loop.FrameFeatureCache) reproduces this call bit for bit.
                matching = [precision.run("matching", self.matchingFeature, imgs[:, i])
                            for i in range(n)]
                per_target = [precision.run("context", self.semanticFeature, imgs[:, i])
                              for i in range(1, n - 1)]
                context_feats = [torch.stack(maps, dim=1).flatten(0, 1)
                                 for maps in zip(*per_target)]
            return self.decode(matching, context_feats, world_T_cam_bn44, cam_intr, memory,
                               use_est)

    def matching_features(self, imgs_n3hw: torch.Tensor) -> torch.Tensor:
        """Per-frame matching features ``[N, 32, H/4, W/4]`` of images in 0..255.

        A frame's features do not depend on the window it is in, so a sequence can compute
        them once per frame and hand them to :meth:`decode`.
        """
        with precision.autocast(imgs_n3hw.device.type, self.amp_dtype):
            return precision.run("matching", self.matchingFeature, normalize_images(imgs_n3hw))

    def context_features(self, imgs_n3hw: torch.Tensor) -> list:
        """Per-frame ResNet context features (five maps) of target images in 0..255."""
        with precision.autocast(imgs_n3hw.device.type, self.amp_dtype):
            return precision.run("context", self.semanticFeature, normalize_images(imgs_n3hw))

    def decode(self, matching: list, context_feats: list, world_T_cam_bn44, cam_intr,
               memory: Optional[ESTMemory] = None, use_est=None):
        """:meth:`predict` from precomputed features (no input checks: see predict's).

        Args:
            matching: per frame of the window, ``[B, 32, H/4, W/4]`` from
                :meth:`matching_features`.
            context_feats: the five context maps of the targets (frames 1..N-2), batch
                ``B * T`` in b-major order, from :meth:`context_features`.
            world_T_cam_bn44, cam_intr, memory, use_est: as :meth:`predict`.
        """
        with precision.autocast(cam_intr.device.type, self.amp_dtype):
            return self._decode(matching, context_feats, world_T_cam_bn44, cam_intr, memory,
                                use_est)

    def _decode(self, matching, context_feats, world_T_cam_bn44, cam_intr, memory, use_est):
        if use_est is None:
            use_est = memory is not None
        use_est = use_est and self.IF_EST_transformer
        n = len(matching)
        K_quarter = scale_intrinsics(cam_intr, 1.0 / MATCHING_STRIDE)
        planes = self.depth_cands.to(cam_intr.dtype)[None]  # the inputs' dtype, not autocast's

        cost_volumes = [self.cost_volume(matching, i, world_T_cam_bn44, K_quarter, planes)
                        for i in range(1, n - 1)]
        target_poses = [world_T_cam_bn44[:, i] for i in range(1, n - 1)]
        return self.CostRegNet(cost_volumes, context_feats, target_poses, K_quarter,
                               self.depth_cands, self.depth_min, self.depth_interval,
                               memory=memory, use_est=use_est)

    def forward(self, imgs, cam_poses, cam_intr, sample=None, pre_costs=None,
                pre_cam_poses=None, mode="train", *, inputs_checked: bool = False):
        """The official interface.

        ``mode="train"`` returns ``(outputs, losses)`` (``sample`` must hold ``dmaps`` and
        ``dmasks`` of all frames, ``[B, N, 1, H, W]``); ``"val"`` returns ``(outputs,
        new_costs, new_cam_poses)``, the memory for the next window. The official
        ``"test"`` (metrics inside ``forward``) is refused: ground truth stays out of the
        model; :func:`evaluation.metrics.window_metrics` computes the same numbers. The EST transformer runs when it
        is built and either training or given memory, as in the official model.
        ``inputs_checked``: see :meth:`predict`.
        """
        if mode == "test":
            raise ValueError("mode='test' is not supported: run mode='val' and compute the "
                             "official window metrics with "
                             "evaluation.metrics.window_metrics(outputs, gt, mask)")
        if mode not in ("train", "val"):
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        memory = ESTMemory.from_official(pre_costs, pre_cam_poses)
        use_est = memory is not None or mode == "train"
        outputs, new_memory = self.predict(imgs, cam_poses, cam_intr, memory, use_est,
                                           inputs_checked)
        if mode == "val":
            return (outputs, *new_memory.to_official())
        gt, mask = _target_ground_truth(sample, imgs.shape[1])
        return outputs, precision.run("loss", multiscale_depth_loss, outputs, gt, mask,
                                      self.depth_min, self.depth_max)


def check_compile_mode(mode: str) -> None:
    """Raise a ValueError unless ``mode`` is one of :data:`COMPILE_MODES`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"--compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                         f"got {mode!r}")


def check_compiled_parts(parts: tuple) -> None:
    """Raise a ValueError unless ``parts`` are some of :data:`COMPILED_PARTS`."""
    unknown = set(parts) - set(COMPILED_PARTS)
    if unknown or not parts:
        raise ValueError(f"compiled parts must be some of {', '.join(COMPILED_PARTS)}, got "
                         f"{list(parts)}")


def compiled_parts(option: str) -> tuple:
    """``--compiled_parts``: ``all`` or comma-separated names among ``COMPILED_PARTS``."""
    if option == "all":
        return COMPILED_PARTS
    parts = tuple(p.strip() for p in option.split(",") if p.strip())
    check_compiled_parts(parts)
    return parts


def normalize_images(imgs: torch.Tensor) -> torch.Tensor:
    """RGB 0..255 -> [-1, 1], as the official model maps its inputs."""
    return 2 * (imgs / 255.0) - 1


def check_inputs(imgs: torch.Tensor, cam_poses: torch.Tensor, cam_intr: torch.Tensor) -> None:
    """Raise a ValueError that says what is wrong with a window the model cannot take."""
    if imgs.dim() != 5 or imgs.shape[2] != 3:
        raise ValueError(f"imgs must be [B, N, 3, H, W], got {list(imgs.shape)}")
    b, n, _, h, w = imgs.shape
    if n < MIN_WINDOW_FRAMES:
        raise ValueError(f"a window needs at least {MIN_WINDOW_FRAMES} frames (targets are "
                         f"the inner ones), got {n}")
    if h < MIN_SIZE or w < MIN_SIZE or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"image size {h}x{w}: height and width must be multiples of "
                         f"{SIZE_MULTIPLE} and at least {MIN_SIZE}")
    if tuple(cam_poses.shape) != (b, n, 4, 4):
        raise ValueError(f"cam_poses must be [B, N, 4, 4] = [{b}, {n}, 4, 4], "
                         f"got {list(cam_poses.shape)}")
    if tuple(cam_intr.shape) != (b, 3, 3):
        raise ValueError(f"cam_intr must be [B, 3, 3] = [{b}, 3, 3], got {list(cam_intr.shape)}")
    if not torch.isfinite(cam_poses).all():
        raise ValueError("cam_poses contain non-finite values")


def _target_ground_truth(sample, num_frames: int):
    if sample is None or "dmaps" not in sample or "dmasks" not in sample:
        raise ValueError("mode 'train' needs sample['dmaps'] and sample['dmasks']")
    t = slice(1, num_frames - 1)
    return sample["dmaps"][:, t], sample["dmasks"][:, t]
